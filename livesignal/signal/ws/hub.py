"""Every socket of this node: the `/ws` upgrade, per-room and per-user fan-out, pings, caps.

The HTTP server hands over each connection whose request is a `/ws` upgrade (take_upgrade);
the hub admits it (services/admission.py), answers 101 or a plain refusal itself, and serves
the socket through a SocketLink (link.py) with no aiohttp object left per socket. Room events
reach the sockets through one RoomFanout per room (fanout.py); a user's events through the hub
itself, subscribed only while that user has a socket here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable

from aiohttp import web

from livesignal.http.client_address import ClientAddresses
from livesignal.http.metrics import FanoutMetrics, Values
from livesignal.http.upgrade import UpgradeRequest
from livesignal.signal.model.auth import bearer_token
from livesignal.signal.model.clock import Clock, MonotonicClock
from livesignal.signal.model.errors import (
    ApiError,
    BadRequest,
    ShuttingDown,
    StoreUnavailable,
    TooManyRequests,
)
from livesignal.signal.model.events import Replay, UserEvent
from livesignal.signal.model.listeners import KeyedSets
from livesignal.signal.services.wiring import Services
from livesignal.signal.ws import handshake
from livesignal.signal.ws.connection import Connection
from livesignal.signal.ws.fanout import RoomFanout
from livesignal.signal.ws.link import CLOSE_GRACE, SocketLink
from livesignal.signal.ws.protocol import CLOSE_GOING_AWAY, CLOSE_LOST_EVENTS, user_event_wire
from livesignal.signal.ws.session import SocketSession

log = logging.getLogger(__name__)


class SocketHub:
    """Every open socket of this process: fan-out, pings, liveness, token expiry, caps."""

    def __init__(self, services: Services, clock: Clock | None = None) -> None:
        self.services = services
        # Write coalescing and the close grace run on this clock (monotonic: node-local
        # intervals); pings and heartbeat timeouts on the services' clock (the store's, which
        # token expiry is measured by too).
        self.clock: Clock = clock or MonotonicClock()
        self.connections: set[Connection] = set()
        self._rooms: dict[str, RoomFanout] = {}
        self._users: KeyedSets[str, Connection] = KeyedSets()
        self._tasks: set[asyncio.Future[None]] = set()
        self._closing = False  # close_all has run: the server is shutting down
        presence = services.settings.presence
        self.interval = presence.heartbeat_interval
        self.timeout = presence.timeout
        limits = services.settings.limits
        self._addresses = ClientAddresses(limits.trusted_proxies)
        self._per_user = SocketCounts("sockets per user", limits.sockets_per_user)
        self._per_address = SocketCounts("sockets per address", limits.sockets_per_ip)
        self.flush_interval = services.settings.ws.flush_interval
        self.metrics = FanoutMetrics()
        services.subscriptions.on_resync(self._resync)
        services.sweeper.on_lease_lost(self._lease_lost)

    def spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def gauges(self) -> Values:
        """This process's socket figures for GET /metrics."""
        return {
            "livesignal_sockets": ("Open WebSockets.", len(self.connections)),
            "livesignal_rooms_attached": ("Rooms with a socket attached here.", len(self._rooms)),
            "livesignal_users_connected": ("Users with a socket here.", len(self._users)),
        }

    # --- rooms -----------------------------------------------------------------------------
    async def replay(self, live_id: str, since: int) -> Replay:
        """A room's events after `since` (a fan-out filling a gap)."""
        return await self.services.rooms.replay(live_id, since)

    async def attach(self, connection: Connection, live_id: str) -> RoomFanout:
        """Add the socket to the room's fan-out; returns once the node's subscription is on."""
        fanout = self._rooms.get(live_id)
        if fanout is None:
            fanout = self._rooms[live_id] = RoomFanout(self, live_id)
            fanout.sockets[connection] = None
            try:
                await self.services.subscriptions.subscribe_room(live_id, fanout.on_event)
            except BaseException as exc:
                self._rooms.pop(live_id, None)
                fanout.ready.set_exception(exc)
                fanout.ready.exception()  # retrieved: others waiting on it re-raise it
                raise
            fanout.ready.set_result(None)
            return fanout
        fanout.sockets[connection] = None
        await asyncio.shield(fanout.ready)
        return fanout

    def detach(self, connection: Connection, live_id: str) -> None:
        fanout = self._rooms.get(live_id)
        if fanout is None:
            return
        fanout.remove(connection)
        if not fanout.sockets:
            del self._rooms[live_id]
            self.services.subscriptions.unsubscribe_room(live_id, fanout.on_event)

    def _resync(self) -> None:
        for fanout in list(self._rooms.values()):
            fanout.resync()

    def _lease_lost(self) -> None:
        """Another node let this one's socket holds lapse: its sockets' members have left.
        Each such socket is closed with 1012, and its client resumes (joining again)."""
        for connection in list(self.connections):
            if connection.holds_membership:
                connection.close(CLOSE_LOST_EVENTS, "membership lapsed: reconnect and resume")

    # --- users -----------------------------------------------------------------------------
    async def add_user_socket(self, connection: Connection) -> None:
        user_id = connection.identity.user_id
        if self._users.add(user_id, connection):
            await self.services.subscriptions.subscribe_user(user_id, self._on_user_event)

    def remove_user_socket(self, connection: Connection) -> None:
        user_id = connection.identity.user_id
        if self._users.discard(user_id, connection):
            self.services.subscriptions.unsubscribe_user(user_id, self._on_user_event)

    def _on_user_event(self, event: UserEvent) -> None:
        sockets = self._users.members(event.user_id)
        if not sockets:
            return
        wire = user_event_wire(event)
        for connection in sockets:
            connection.on_user_event(event, wire)

    # --- liveness --------------------------------------------------------------------------
    async def run(self) -> None:
        """Every interval (on the services' clock): ping, close the silent and the expired."""
        clock = self.services.clock
        while True:
            await clock.sleep(self.interval)
            now = clock.now()
            for connection in list(self.connections):
                connection.tick(now, self.timeout)

    async def close_all(self) -> None:
        self._closing = True  # upgrades still being admitted are refused from now on
        for connection in list(self.connections):
            connection.close(CLOSE_GOING_AWAY, "server shutting down")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_GRACE)

    # --- the upgrade -----------------------------------------------------------------------
    def take_upgrade(
        self, transport: asyncio.Transport, request: UpgradeRequest, early: bytes
    ) -> None:
        """The HTTP server hands over a connection whose head is a `/ws` upgrade (and any
        bytes that followed it): decide it, and serve the socket if it is accepted."""
        link = SocketLink(transport, early, self.clock)
        transport.set_protocol(link)
        self.spawn(self._admit(link, request))

    async def _admit(self, link: SocketLink, request: UpgradeRequest) -> None:
        """Authenticate before the upgrade; answer 101 and start the socket, or refuse."""
        try:
            await self._admit_or_refuse(link, request)
        except Exception:
            # A bug, or a store error no layer mapped: what a failing handler answers (a 500),
            # not a connection left open with nothing to end it.
            log.exception("could not open a socket")
            link.refuse(_refusal_bytes(ApiError()))

    async def _admit_or_refuse(self, link: SocketLink, request: UpgradeRequest) -> None:
        services = self.services
        token = bearer_token(request.header("authorization")) or request.query("token")
        peer = link.transport.get_extra_info("peername")
        remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        address = self._addresses.of(remote, request.header("x-forwarded-for"))
        try:
            identity = await services.admission.admit(token)
            if (problem := request.problem()) is not None:
                raise BadRequest(problem)
            if not request.version_ok():
                link.refuse(
                    handshake.refusal(
                        400,
                        {"code": 400, "message": "Sec-WebSocket-Version 13 is required"},
                        {"Sec-WebSocket-Version": "13"},
                    )
                )
                return
            # No await between checking and counting: a burst of upgrades cannot pass together.
            self._per_user.check(identity.user_id)
            self._per_address.check(address)
        except ApiError as error:
            link.refuse(_refusal_bytes(error))
            return
        except (ConnectionError, TimeoutError, OSError):
            link.refuse(_refusal_bytes(StoreUnavailable()))
            return
        self._per_user.add(identity.user_id)
        self._per_address.add(address)
        session = SocketSession(identity, secrets.token_hex(8), services.clock.now())
        connection = Connection(link, services, session, self, address)
        # What needs the store is done before the upgrade: with the store unreachable the
        # client gets a plain 503 instead of a socket cut off right after it opened.
        try:
            await self.add_user_socket(connection)
            pending = await services.relays.pending(identity)
        except BaseException as error:
            self._release_counts(connection)
            self.remove_user_socket(connection)
            if not isinstance(error, ApiError | ConnectionError | TimeoutError | OSError):
                raise
            link.refuse(
                _refusal_bytes(error if isinstance(error, ApiError) else StoreUnavailable())
            )
            return
        if link.lost or link.transport.is_closing() or self._closing:
            self._release_counts(connection)
            self.remove_user_socket(connection)
            if self._closing:
                link.refuse(_refusal_bytes(ShuttingDown()))
            return
        self.connections.add(connection)
        link.accept(handshake.switching_protocols(request), connection)
        connection.start(pending["list"])
        link.read_early()

    def forget(self, connection: Connection) -> None:
        """A socket's connection is gone: it counts no more."""
        if connection in self.connections:
            self.connections.discard(connection)
            self._release_counts(connection)
            self.remove_user_socket(connection)

    def _release_counts(self, connection: Connection) -> None:
        self._per_user.remove(connection.identity.user_id)
        self._per_address.remove(connection.address)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /ws that is no WebSocket upgrade the server could take over (those never get
        here): the same refusals an upgrade would get, else 400."""
        token = bearer_token(request.headers.get("Authorization")) or request.query.get("token")
        try:
            self.services.admission.check(token)
        except ApiError as error:
            return _refusal(error)
        return _refusal(BadRequest("a WebSocket upgrade (RFC 6455) is required"))


def _refusal_bytes(error: ApiError) -> bytes:
    """An upgrade refused before it happens, as raw HTTP on the handed-over connection."""
    headers = {}
    if isinstance(error, TooManyRequests) and error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    body = {"code": error.code, "message": error.message}
    return handshake.refusal(error.http_status, body, headers)


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
