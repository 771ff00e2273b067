"""One client's WebSocket (PROTOCOL §4): frames in, replies and events out.

Outgoing frames are written straight into the socket's transport, in the order they are
produced; its buffer is the socket's send queue, bounded at 1 MiB: past that the socket is
closed with 4009 rather than slowing its room. Room events arrive from this node's fan-out
(hub.py) as ready-made wire frames; the socket keeps the last seq it delivered (its
watermark) and drops anything at or below it, so join replies, buffered events and resume
can race freely without a repeat.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from livesignal.signal.model import events
from livesignal.signal.model.auth import Identity
from livesignal.signal.model.errors import ApiError, BadRequest, Forbidden, StoreUnavailable
from livesignal.signal.model.events import RoomEvent, UserEvent
from livesignal.signal.model.params import Params
from livesignal.signal.services.operations import OPERATIONS, Call
from livesignal.signal.services.presence import Hold, Joined
from livesignal.signal.services.wiring import Services
from livesignal.signal.ws.frames import (
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Message,
    ping_wire,
    pong_wire,
    text_wire,
)
from livesignal.signal.ws.link import SocketLink
from livesignal.signal.ws.protocol import (
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_UNSUPPORTED,
    PONG_FRAME,
    AppPing,
    Frame,
    Malformed,
    Request,
    error_frame,
    parse_frame,
    reply_frame,
    user_event_wire,
    welcome_frame,
)

if TYPE_CHECKING:
    from livesignal.signal.ws.fanout import Queued, RoomFanout
    from livesignal.signal.ws.hub import SocketHub

log = logging.getLogger(__name__)

MAX_UNSENT = 1024 * 1024  # bytes buffered for one socket before it counts as a slow consumer
# Frames queued behind an operation in progress: reading pauses at INBOX_PAUSE (the kernel's
# buffers then hold the client back) and resumes once the queue is down to INBOX_RESUME.
INBOX_PAUSE = 64
INBOX_RESUME = 16

PING_WIRE = ping_wire()

# (the join-like action, run with the hold this socket should take) -> what it joined
AttachAction = Callable[[Hold], Awaitable[Joined]]


class Connection:
    # Thousands of these live at once: no per-instance __dict__ (PROTOCOL §4 sockets are idle
    # most of their life, so their memory is what a node's capacity is made of).
    __slots__ = (
        "link",
        "_transport",
        "address",
        "services",
        "identity",
        "hub",
        "session_id",
        "attached",
        "holds_membership",
        "room_seq",
        "last_seen",
        "_attaching",
        "_held",
        "_fanout",
        "_closing",
        "_close_task",
        "leave_reason",
        "_inbox",
        "_worker",
    )

    def __init__(
        self,
        link: SocketLink,
        services: Services,
        identity: Identity,
        hub: SocketHub,
        address: str,
    ) -> None:
        self.link = link
        self._transport = link.transport
        self.address = address  # the client's address, as counted for sockets_per_ip
        self.services = services
        self.identity = identity
        self.hub = hub
        self.session_id = secrets.token_hex(8)
        self.attached: str | None = None  # the room whose events this socket receives
        self.holds_membership = False  # this socket keeps its user present in `attached`
        self.room_seq = 0  # the last seq of `attached` this socket delivered (watermark)
        self.last_seen = services.identities.now()
        self._attaching: str | None = None  # a room being attached: its events wait in
        self._held: list[tuple[RoomEvent, bytes]] = []  # ... this buffer until the reply
        self._fanout: RoomFanout | None = None  # the fan-out of `attached`
        self._closing = False
        self._close_task: asyncio.Future[None] | None = None
        self.leave_reason = events.LEFT_LEAVE
        # Frames that wait for an operation in progress (operations run one at a time, in
        # order); None while none is queued. The worker task exists only while there is work.
        self._inbox: deque[Frame | Message] | None = None
        self._worker: asyncio.Future[None] | None = None

    # --- outgoing ------------------------------------------------------------------------
    def send(self, frame: str) -> None:
        self.send_wire(text_wire(frame))

    def send_wire(self, wire: bytes) -> None:
        """Write a frame produced for this socket now (a reply, a user event, a ping).

        Room events its fan-out still holds for coalescing were produced earlier: they go
        first, so the socket sees every frame in the order the server produced it.
        """
        fanout = self._fanout
        if fanout is not None and fanout.queued:
            fanout.catch_up(self)
        self._write(wire)

    def _write(self, wire: bytes) -> None:
        """Write a ready-made frame; a socket that cannot keep up is closed, not waited for.

        Frames go straight into the transport, whose buffer is this socket's send queue: no
        task switch per delivery, and the order of writes is the order of events.
        """
        transport = self._transport
        if self._closing or transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() + len(wire) > MAX_UNSENT:
            log.info("closing slow consumer %s (%s)", self.session_id, self.identity.user_id)
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer", catch_up=False)
            return
        transport.write(wire)

    def ping(self) -> None:
        self.send_wire(PING_WIRE)

    def close(
        self,
        code: int,
        message: str,
        *,
        leave_reason: str | None = None,
        catch_up: bool = True,
    ) -> None:
        """Close from the server side; room events queued for it still go out first
        (`catch_up`), unless it is closed for not taking what it was sent."""
        if self._closing:
            return
        fanout = self._fanout
        if catch_up and fanout is not None and fanout.queued:
            fanout.catch_up(self)
            if self._closing:  # that was more than it could take
                return
        self._closing = True
        if leave_reason is not None:
            self.leave_reason = leave_reason
        # Presence ends now, not when a silent peer finally lets the closing handshake end.
        self.hub.spawn(self._leave_attached_room())
        self.link.send_close(code, message)  # written now, behind what is queued
        self._close_task = self.hub.spawn(self._closed())

    async def _closed(self) -> None:
        """Until the closing handshake ends (the link cuts a peer that does not answer)."""
        link = self.link
        if link.lost:
            return
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def _ended() -> None:
            if not ended.done():
                ended.set_result(None)

        link.on_lost(_ended)
        await ended

    # --- events from this node's fan-out --------------------------------------------------
    def on_room_event(self, event: RoomEvent, wire: bytes) -> bool:
        """Deliver one room event unless held back or already delivered; whether it went."""
        if event.live_id == self._attaching:
            self._held.append((event, wire))
            return False
        if event.live_id != self.attached or event.seq <= self.room_seq:
            return False
        self.room_seq = event.seq
        self._write(wire)
        if event.name == events.ROOM_DELETED:
            self._detach_locally(event.live_id)
        return True

    def on_room_batch(
        self,
        live_id: str,
        batch: list[Queued],
        first_seq: int,
        joined: bytes,
        deleted: bool,
    ) -> int:
        """A coalesced run of the room's events, in one write when this socket takes them
        all; how many of them it delivered."""
        if self.attached != live_id or self._attaching == live_id or self.room_seq >= first_seq:
            # Held back, partly delivered already, or not due: one at a time.
            return sum(self.on_room_event(event, wire) for event, wire, _ in batch)
        self.room_seq = batch[-1][0].seq
        self._write(joined)
        if deleted:
            self._detach_locally(live_id)
        return len(batch)

    def on_user_event(self, event: UserEvent, wire: bytes) -> None:
        if event.name == events.DETACH:
            self._detach_locally(str(event.data.get("live_id", "")))
            return
        self.send_wire(wire)

    def _detach_locally(self, live_id: str) -> None:
        if self.attached == live_id:
            self.hub.detach(self, live_id)
            self.attached = None
            self._fanout = None
            self.holds_membership = False

    # --- the connection's life -----------------------------------------------------------
    def start(self, pending_invitations: list[dict[str, Any]]) -> None:
        """The upgrade is answered: greet the client and give it what waits for it."""
        settings = self.services.settings.presence
        self.send(
            welcome_frame(
                self.session_id,
                self.identity.user_id,
                settings.heartbeat_interval,
                settings.timeout,
            )
        )
        for relay in pending_invitations:
            invited = UserEvent(self.identity.user_id, events.RELAY_INVITED, {"relay": relay})
            self.send_wire(user_event_wire(invited))

    def on_lost(self) -> None:
        """The TCP connection is gone: forget the socket, and leave its room."""
        self._closing = True
        self.hub.forget(self)
        self.hub.spawn(self._leave_attached_room())

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
        except (StoreUnavailable, ConnectionError, TimeoutError, OSError) as exc:
            # The hold stays recorded for this node; the member lapses with it only if the
            # node itself stops renewing its lease. Logged, not raised: the socket is gone.
            log.warning("could not release presence of %s: %s", self.identity.user_id, exc)
        except Exception:
            log.exception("could not release presence of %s", self.identity.user_id)

    # --- incoming (from the link) ---------------------------------------------------------
    def on_message(self, message: Message) -> None:
        self.last_seen = self.services.identities.now()
        item: Frame | Message = message
        if message.opcode == OP_TEXT:
            if self._closing:
                return  # the server is closing this socket: no new work
            item = parse_frame(message.text)
        elif message.opcode == OP_PONG:
            return  # liveness only
        if self._inbox is None and not isinstance(item, Request):
            self._handle_now(item)  # nothing in progress to wait for
            return
        self._queue(item)

    def on_protocol_error(self, code: int, reason: str) -> None:
        self.close(code, reason)

    def _handle_now(self, item: Frame | Message) -> None:
        """A frame answered without the store: pings, malformed frames, binary, close."""
        if isinstance(item, AppPing):
            self.send(PONG_FRAME)
        elif isinstance(item, Malformed):
            self.send(error_frame(item.id, BadRequest(item.message)))
        elif isinstance(item, Message):
            if item.opcode == OP_PING:
                self.send_wire(pong_wire(item.data))
            elif item.opcode == OP_BINARY:
                self.close(CLOSE_UNSUPPORTED, "binary frames are not supported")
            elif item.opcode == OP_CLOSE:
                self._closing = True  # no new work; the peer leaves
                self.link.answer_close(
                    CLOSE_NORMAL if item.close_code == CLOSE_NO_STATUS else item.close_code
                )

    def _queue(self, item: Frame | Message) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(item)
        if len(inbox) == INBOX_PAUSE:
            self._transport.pause_reading()  # a client sending faster than we answer waits
        if self._worker is None:
            self._worker = self.hub.spawn(self._work())

    async def _work(self) -> None:
        """Run queued frames one at a time, in order; ends when the queue is empty."""
        inbox = self._inbox
        try:
            while inbox:
                item = inbox.popleft()
                if len(inbox) == INBOX_RESUME and not self._transport.is_closing():
                    self._transport.resume_reading()
                if isinstance(item, Request):
                    if not self._closing:
                        await self._dispatch(item)
                else:
                    self._handle_now(item)
            if self.link.lost:
                # The peer left while an operation ran: on_lost left the room it was in then,
                # and what the operation attached since is left now (no ghost member).
                await self._leave_attached_room()
        finally:
            self._inbox = None
            self._worker = None

    async def _dispatch(self, request: Request) -> None:
        try:
            self.services.rates.admit_request(self.identity)
            special = _ATTACHING_OPS.get(request.type)
            if special is not None:
                await special(self, request)
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
    async def _attach(self, live_id: str, action: AttachAction, *, joins: bool = True) -> Joined:
        """Run a join-like action and take the room's events from the seq it reports on.

        The room's events are held back while the action runs; the caller replies and then
        calls `_release`. `joins` says whether the action makes the user a member (with
        this socket's hold) or only subscribes the socket.
        """
        already = self.attached == live_id
        keeps_hold = already and self.holds_membership
        self._attaching, self._held = live_id, []
        fanout = self._fanout
        try:
            if not already:
                fanout = await self.hub.attach(self, live_id)
            joined = await action("none" if keeps_hold or not joins else "socket")
        except BaseException:
            if already:
                self._release()  # still attached: what arrived meanwhile is still due
            else:
                self._attaching, self._held = None, []
                self.hub.detach(self, live_id)
            raise
        if self.attached is not None and self.attached != live_id:
            # Still attached elsewhere (the action did not switch the membership, e.g. an
            # admin starting another room): drop that room and this socket's hold on it.
            await self._leave_attached_room()
        if not already:
            self.attached = live_id
            self._fanout = fanout
            self.room_seq = joined.seq
        self.holds_membership = keeps_hold or joins
        return joined

    def _release(self) -> None:
        """Deliver what arrived while attaching, newer than the seq the reply reported."""
        held, self._held = self._held, []
        self._attaching = None
        for event, wire in held:
            self.on_room_event(event, wire)

    async def _op_join(self, request: Request) -> None:
        live_id = Params(request.data).text("live_id")
        rooms = self.services.rooms

        async def join(hold: Hold) -> Joined:
            return await rooms.join(self.identity, live_id, hold=hold)

        joined = await self._attach(live_id, join)
        self.send(reply_frame(request.id, await rooms.attach_reply(joined, self.identity)))
        self._release()

    async def _op_start(self, request: Request) -> None:
        live_id = Params(request.data).text("live_id")
        rooms = self.services.rooms
        # The anchor joins with this socket's hold; an admin starting someone else's room is
        # not made a member, but its socket receives the room's events all the same.
        is_anchor = (await rooms.get(live_id)).anchor_id == self.identity.user_id

        async def start(hold: Hold) -> Joined:
            return await rooms.start_and_join(self.identity, live_id, hold=hold)

        joined = await self._attach(live_id, start, joins=is_anchor)
        self.send(reply_frame(request.id, await rooms.attach_reply(joined, self.identity)))
        self._release()

    async def _op_resume(self, request: Request) -> None:
        params = Params(request.data)
        live_id = params.text("live_id")
        since = params.opt_int("since")
        if since is None or since < 0:
            raise BadRequest("since is required: the last seq received, >= 0")
        feed = self.services.feed
        await self.services.rooms.get(live_id)  # a deleted room is 404, not "since too high"
        if since > await feed.current_seq(live_id):
            raise BadRequest("since is above the room's current seq")
        rooms = self.services.rooms

        async def rejoin(hold: Hold) -> Joined:
            return await rooms.join(self.identity, live_id, hold=hold)

        await self._attach(live_id, rejoin)
        replay = await feed.replay(live_id, since)
        for event in replay.events:  # what the client asked for, even if it had some of it
            self.send_wire(self.hub.room_wire(event))
        self.room_seq = max(self.room_seq, replay.seq)
        self.send(reply_frame(request.id, {"recovered": replay.recovered, "seq": replay.seq}))
        self._release()

    async def _op_refresh(self, request: Request) -> None:
        token = Params(request.data).text("token")
        identity = self.services.identities.verify(token)
        if identity.user_id != self.identity.user_id:
            raise Forbidden("the new token is for another user")
        self.identity = identity
        self.send(reply_frame(request.id, {"exp": identity.exp}))

    # --- timers (driven by the hub) ------------------------------------------------------
    def tick(self, now: float, timeout: float) -> None:
        if self._closing:
            return
        if now - self.last_seen > timeout:
            self.close(
                CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout", leave_reason=events.LEFT_TIMEOUT
            )
        elif self.identity.exp <= now:
            self.close(CLOSE_TOKEN_EXPIRED, "token expired")
        else:
            self.ping()


# Operations that also attach the socket to a room (or act on the socket itself).
_ATTACHING_OPS: dict[str, Callable[[Connection, Request], Awaitable[None]]] = {
    "room.join": Connection._op_join,
    "room.start": Connection._op_start,
    "room.resume": Connection._op_resume,
    "auth.refresh": Connection._op_refresh,
}


def describe(connection: Connection) -> dict[str, Any]:
    """For logs and debugging: who a socket is and what it is attached to."""
    return {
        "session_id": connection.session_id,
        "user_id": connection.identity.user_id,
        "attached": connection.attached,
        "room_seq": connection.room_seq,
    }
