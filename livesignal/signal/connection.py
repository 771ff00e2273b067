"""The `/ws` endpoint (PROTOCOL §4): one aiohttp WebSocket per app, driving protocol.py.

Outgoing frames are written straight into the socket's transport, in the order they are
produced; its buffer is the socket's send queue, bounded at 1 MiB: past that the socket is
closed with 4009 rather than slowing its room. Room events are encoded once into a wire frame
and that same bytes object goes to every socket. The hub pings every socket each heartbeat
interval; any frame from the client proves liveness.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from livesignal.client_address import ClientAddresses
from livesignal.signal import events
from livesignal.signal.auth import Identity, bearer_token
from livesignal.signal.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
)
from livesignal.signal.events import RoomEvent, UserEvent
from livesignal.signal.operations import OPERATIONS, Call
from livesignal.signal.params import Params
from livesignal.signal.presence import DETACH, Hold
from livesignal.signal.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_UNSUPPORTED,
    MAX_FRAME,
    PONG_FRAME,
    AppPing,
    Malformed,
    Request,
    error_frame,
    parse_frame,
    ping_wire,
    pong_wire,
    reply_frame,
    text_wire,
    welcome_frame,
)
from livesignal.signal.services import Services
from livesignal.signal.views import relay_view

log = logging.getLogger(__name__)

MAX_UNSENT = 1024 * 1024  # bytes buffered for one socket before it counts as a slow consumer
CLOSE_GRACE = 3.0  # seconds a closing handshake may take before the transport is aborted


PING_WIRE = ping_wire()


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        services: Services,
        identity: Identity,
        hub: SocketHub,
        transport: asyncio.Transport | None,
    ) -> None:
        self.ws = ws
        self._transport = transport
        self.services = services
        self.identity = identity
        self.hub = hub
        self.session_id = secrets.token_hex(8)
        self.attached: str | None = None  # the room whose events this socket receives
        self.holds_membership = False  # this socket keeps its user present in `attached`
        self.last_seen = asyncio.get_running_loop().time()
        self._buffer: list[RoomEvent] | None = None  # events held back while attaching
        self._closing = False
        self._close_task: asyncio.Future[None] | None = None
        self.leave_reason = events.LEFT_LEAVE
        self._special: dict[str, Callable[[Request], Awaitable[None]]] = {
            "room.join": self._op_join,
            "room.start": self._op_start,
            "room.resume": self._op_resume,
            "auth.refresh": self._op_refresh,
        }

    # --- outgoing ------------------------------------------------------------------------
    def send(self, frame: str) -> None:
        self.send_wire(text_wire(frame))

    def send_wire(self, wire: bytes) -> None:
        """Write a ready-made frame; a socket that cannot keep up is closed, not waited for.

        Frames go straight into the transport, whose buffer is this socket's send queue: no
        task switch per delivery, and the order of writes is the order of events.
        """
        transport = self._transport
        if self._closing or transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() + len(wire) > MAX_UNSENT:
            log.info("closing slow consumer %s (%s)", self.session_id, self.identity.user_id)
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
            return
        transport.write(wire)

    def ping(self) -> None:
        self.send_wire(PING_WIRE)

    def close(self, code: int, message: str, *, leave_reason: str | None = None) -> None:
        """Close from the server side, dropping whatever was still queued."""
        if self._closing:
            return
        self._closing = True
        if leave_reason is not None:
            self.leave_reason = leave_reason
        # Presence ends now, not when a silent peer finally lets the closing handshake end.
        self.hub.spawn(self._leave_attached_room())
        self._close_task = self.hub.spawn(self._close(code, message))

    async def _close(self, code: int, message: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()), CLOSE_GRACE)
        except (TimeoutError, ConnectionError):
            pass
        # A peer that does not answer the closing handshake is cut off.
        if self._transport is not None and not self.ws.closed:
            self._transport.abort()

    # --- events from the broker ----------------------------------------------------------
    def on_room_event(self, event: RoomEvent) -> None:
        if self._buffer is not None:
            self._buffer.append(event)
            return
        self.send_wire(event.wire)
        if event.name == events.ROOM_DELETED:
            self._detach_locally(event.live_id)

    def on_user_event(self, event: UserEvent) -> None:
        if event.name == DETACH:
            self._detach_locally(str(event.data.get("live_id", "")))
            return
        self.send_wire(event.wire)

    def _detach_locally(self, live_id: str) -> None:
        if self.attached == live_id:
            self.services.ctx.broker.unsubscribe_room(live_id, self.on_room_event)
            self.attached = None
            self.holds_membership = False

    # --- the connection's life -----------------------------------------------------------
    async def run(self) -> None:
        ctx = self.services.ctx
        settings = ctx.settings.presence
        ctx.broker.subscribe_user(self.identity.user_id, self.on_user_event)
        try:
            self.send(
                welcome_frame(
                    self.session_id,
                    self.identity.user_id,
                    settings.heartbeat_interval,
                    settings.timeout,
                )
            )
            pending = await self.services.relays.pending(self.identity)
            for relay in pending["list"]:
                invited = events.user_event(
                    self.identity.user_id, events.RELAY_INVITED, {"relay": relay}
                )
                self.send_wire(invited.wire)
            await self._read_loop()
            if self._close_task is not None:
                # The server is closing: keep the handler (and so the connection) alive until
                # the closing handshake ends. aiohttp's close() reads and drops what the peer
                # still sends meanwhile; closing the TCP socket with that unread would make the
                # kernel answer with a reset, and the peer would never see our close code.
                await asyncio.shield(self._close_task)
        finally:
            ctx.broker.unsubscribe_user(self.identity.user_id, self.on_user_event)
            await self._leave_attached_room()

    async def _leave_attached_room(self) -> None:
        """Stop receiving the room's events and drop this socket's hold on the membership."""
        live_id, held = self.attached, self.holds_membership
        if live_id is None:
            return
        self._detach_locally(live_id)
        if not held:
            return
        try:
            await self.services.presence.release_socket(
                self.identity.user_id, live_id, self.leave_reason
            )
        except Exception:
            log.exception("could not release presence of %s", self.identity.user_id)

    async def _read_loop(self) -> None:
        ws = self.ws
        loop = asyncio.get_running_loop()
        while not ws.closed:
            message = await ws.receive()
            self.last_seen = loop.time()
            kind = message.type
            if kind == WSMsgType.TEXT:
                await self._on_text(message.data)
            elif kind == WSMsgType.PING:
                self.send_wire(pong_wire(message.data))
            elif kind == WSMsgType.PONG:
                pass  # liveness only
            elif kind == WSMsgType.BINARY:
                self.close(CLOSE_UNSUPPORTED, "binary frames are not supported")
            else:  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp already sent 1009 for big frames)
                break

    async def _on_text(self, text: str) -> None:
        if self._closing:
            return  # the server is closing this socket: no new work
        frame = parse_frame(text)
        if isinstance(frame, AppPing):
            self.send(PONG_FRAME)
        elif isinstance(frame, Malformed):
            self.send(error_frame(frame.id, BadRequest(frame.message)))
        else:
            await self._dispatch(frame)

    async def _dispatch(self, request: Request) -> None:
        try:
            self.services.rates.admit_request(self.identity)
            special = self._special.get(request.type)
            if special is not None:
                await special(request)
                return
            handler = OPERATIONS.get(request.type)
            if handler is None:
                raise BadRequest(f"unknown type {request.type!r}")
            call = Call(self.identity, Params(request.data), via_socket=True)
            result = await handler(self.services, call)
            self.send(reply_frame(request.id, result))
        except ApiError as error:
            self.send(error_frame(request.id, error))
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.warning("%s failed, store unreachable: %s", request.type, exc)
            self.send(error_frame(request.id, StoreUnavailable()))
        except Exception:
            log.exception("%s failed", request.type)
            self.send(error_frame(request.id, ApiError("internal error")))

    # --- operations that attach the socket to a room -------------------------------------
    async def _attach(
        self,
        live_id: str,
        action: Callable[[Hold], Awaitable[dict[str, Any]]],
        *,
        joins: bool = True,
    ) -> tuple[dict[str, Any], list[RoomEvent]]:
        """Run a join-like action and subscribe to the room without losing or repeating events.

        Events published while the action runs are held back; the caller replies and then
        releases those newer than the seq it reported. `joins` says whether the action makes
        the user a member (with this socket's hold) or only subscribes the socket.
        """
        broker = self.services.ctx.broker
        already = self.attached == live_id
        keeps_hold = already and self.holds_membership
        if not already:
            self._buffer = []
            broker.subscribe_room(live_id, self.on_room_event)
        try:
            result = await action("none" if keeps_hold or not joins else "socket")
        except BaseException:
            if not already:
                broker.unsubscribe_room(live_id, self.on_room_event)
                self._buffer = None
            raise
        held, self._buffer = self._buffer or [], None
        if self.attached is not None and self.attached != live_id:
            # Still attached elsewhere (the action did not switch the membership, e.g. an
            # admin starting another room): drop that room and this socket's hold on it.
            await self._leave_attached_room()
        self.attached = live_id
        self.holds_membership = keeps_hold or joins
        return result, held

    def _release(self, held: list[RoomEvent], after_seq: int) -> None:
        for event in held:
            if event.seq > after_seq:
                self.on_room_event(event)

    async def _room_reply(
        self, room_view: dict[str, Any], live_id: str
    ) -> tuple[dict[str, Any], int]:
        ctx = self.services.ctx
        seq = await ctx.broker.current_seq(live_id)
        relay = None
        room = await ctx.store.get_room(live_id)
        if room is not None and room.relay_id:
            found = await ctx.store.get_relay(room.relay_id)
            if found is not None and found.status.is_established:
                relay = relay_view(found)
        return {**room_view, "seq": seq, "relay": relay}, seq

    async def _op_join(self, request: Request) -> None:
        live_id = Params(request.data).text("live_id")
        rooms = self.services.rooms

        async def join(hold: Hold) -> dict[str, Any]:
            room = await rooms.join(self.identity, live_id, hold=hold)
            return await rooms.render(room, self.identity)

        view, held = await self._attach(live_id, join)
        reply, seq = await self._room_reply(view, live_id)
        self.send(reply_frame(request.id, reply))
        self._release(held, seq)

    async def _op_start(self, request: Request) -> None:
        live_id = Params(request.data).text("live_id")
        rooms = self.services.rooms
        # The anchor joins with this socket's hold; an admin starting someone else's room is
        # not made a member, but its socket receives the room's events all the same.
        is_anchor = (await rooms.get(live_id)).anchor_id == self.identity.user_id

        async def start(hold: Hold) -> dict[str, Any]:
            return await rooms.start(self.identity, live_id, hold=hold)

        view, held = await self._attach(live_id, start, joins=is_anchor)
        reply, seq = await self._room_reply(view, live_id)
        self.send(reply_frame(request.id, reply))
        self._release(held, seq)

    async def _op_resume(self, request: Request) -> None:
        params = Params(request.data)
        live_id = params.text("live_id")
        since = params.opt_int("since")
        if since is None or since < 0:
            raise BadRequest("since is required: the last seq received, >= 0")
        broker = self.services.ctx.broker
        await self.services.rooms.get(live_id)  # a deleted room is 404, not "since too high"
        if since > await broker.current_seq(live_id):
            raise BadRequest("since is above the room's current seq")
        rooms = self.services.rooms

        async def rejoin(hold: Hold) -> dict[str, Any]:
            await rooms.join(self.identity, live_id, hold=hold)
            return {}

        _, held = await self._attach(live_id, rejoin)
        replay = await broker.replay(live_id, since)
        for event in replay.events:
            self.send_wire(event.wire)
        self.send(reply_frame(request.id, {"recovered": replay.recovered, "seq": replay.seq}))
        self._release(held, replay.seq)

    async def _op_refresh(self, request: Request) -> None:
        token = Params(request.data).text("token")
        ctx = self.services.ctx
        identity = ctx.tokens.verify(token, ctx.clock.now())
        if identity.user_id != self.identity.user_id:
            raise Forbidden("the new token is for another user")
        self.identity = identity
        self.send(reply_frame(request.id, {"exp": identity.exp}))

    # --- timers (driven by the hub) ------------------------------------------------------
    def tick(self, now: float, wall_now: float, timeout: float) -> None:
        if self._closing:
            return
        if now - self.last_seen > timeout:
            self.close(
                CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout", leave_reason=events.LEFT_TIMEOUT
            )
        elif self.identity.exp and self.identity.exp <= wall_now:
            self.close(CLOSE_TOKEN_EXPIRED, "token expired")
        else:
            self.ping()


class SocketHub:
    """Every open socket of this process: pings, liveness, token expiry and shutdown."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        presence = services.ctx.settings.presence
        self.interval = presence.heartbeat_interval
        self.timeout = presence.timeout
        limits = services.ctx.settings.limits
        self._addresses = ClientAddresses(limits.trusted_proxies)
        self._per_user = SocketCounts("sockets per user", limits.sockets_per_user)
        self._per_address = SocketCounts("sockets per address", limits.sockets_per_ip)

    def spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self.services.ctx.clock
        while True:
            await asyncio.sleep(self.interval)
            now, wall_now = loop.time(), clock.now()
            for connection in list(self.connections):
                connection.tick(now, wall_now, self.timeout)

    async def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close(CLOSE_GOING_AWAY, "server shutting down")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_GRACE)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /ws: authenticate before the upgrade, then serve the socket until it closes."""
        ctx = self.services.ctx
        token = bearer_token(request.headers.get("Authorization")) or request.query.get("token")
        address = self._addresses.of(request.remote, request.headers.get("X-Forwarded-For"))
        try:
            if not token:
                raise Unauthorized("missing token")
            identity = ctx.tokens.verify(token, ctx.clock.now())
            self.services.rates.admit_request(identity)
            await self.services.users.ensure(identity.user_id)
            # No await between checking and counting: a burst of upgrades cannot pass together.
            self._per_user.check(identity.user_id)
            self._per_address.check(address)
        except ApiError as error:
            return _refusal(error)
        self._per_user.add(identity.user_id)
        self._per_address.add(address)
        try:
            # aiohttp refuses a message of max_msg_size bytes or more; PROTOCOL: over 64 KiB.
            ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=MAX_FRAME + 1)
            await ws.prepare(request)
            connection = Connection(ws, self.services, identity, self, request.transport)
            self.connections.add(connection)
            try:
                await connection.run()
            finally:
                self.connections.discard(connection)
        finally:
            self._per_user.remove(identity.user_id)
            self._per_address.remove(address)
        return ws


def _refusal(error: ApiError) -> web.Response:
    """An upgrade refused before it happens: plain HTTP with the error's status and code."""
    response = web.json_response(
        {"code": error.code, "message": error.message}, status=error.http_status
    )
    if isinstance(error, TooManyRequests) and error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


class SocketCounts:
    """Open sockets per key (user or address) on this process, capped at `limit` (0 = off)."""

    def __init__(self, what: str, limit: int) -> None:
        self._what = what
        self._limit = limit
        self._open: dict[str, int] = {}

    def check(self, key: str) -> None:
        if self._limit and self._open.get(key, 0) >= self._limit:
            raise TooManyRequests(f"at most {self._limit} open {self._what}")

    def add(self, key: str) -> None:
        self._open[key] = self._open.get(key, 0) + 1

    def remove(self, key: str) -> None:
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)
