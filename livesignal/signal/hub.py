"""Every socket of this node: the `/ws` upgrade, per-room and per-user fan-out, pings, caps.

The HTTP server hands over each connection whose request is a `/ws` upgrade (take_upgrade);
the hub authenticates it, answers 101 or a plain refusal itself, and serves the socket through
a SocketLink (socket_link.py) with no aiohttp object left per socket.

A node subscribes to a room's events only while it has a socket attached to that room, and to
a user's events only while that user has a socket here. Each event's wire frame is built once
per node and written to every socket that wants it. The node remembers the last seq it
delivered per room: anything at or below it is a repeat; anything past the next one is a gap,
filled from the room's history before delivery goes on (or, when that history is gone, the
room's sockets are closed with 1012 so that their clients resume).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable

from aiohttp import web

from livesignal.client_address import ClientAddresses
from livesignal.metrics import FanoutMetrics, Values
from livesignal.signal import ws_handshake
from livesignal.signal.auth import Identity, bearer_token
from livesignal.signal.connection import Connection
from livesignal.signal.errors import (
    ApiError,
    BadRequest,
    ShuttingDown,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
)
from livesignal.signal.events import ROOM_DELETED, RoomEvent, UserEvent
from livesignal.signal.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_LOST_EVENTS,
    room_event_wire,
    user_event_wire,
)
from livesignal.signal.services import Services
from livesignal.signal.socket_link import CLOSE_GRACE, SocketLink
from livesignal.signal.ws_handshake import UpgradeRequest

log = logging.getLogger(__name__)


# (event, its wire frame, when it reached the fan-out on the loop's clock)
Queued = tuple[RoomEvent, bytes, float]
# Sockets written between two readings of the clock for GET /metrics' delay histogram: the
# delay a socket saw is known to within the time it takes to write to this many.
TIMED_CHUNK = 64


class RoomFanout:
    """This node's sockets attached to one room, behind one broker subscription.

    With `[ws] flush_interval` > 0, an event of a quiet room goes out at once; events that come
    within the interval after a write wait for the interval to end and are then written to
    each socket as one buffer (Nagle's rule, in time): one join and one write per socket per
    batch instead of one write per event (the kernel's cost of a write dominates a delivery),
    no added delay while a room is quiet, and never more than the interval. A socket about to
    receive anything else (a reply, a user event, its close) first takes what is queued, so
    it never sees frames out of the order the server produced them.
    """

    def __init__(self, hub: SocketHub, live_id: str) -> None:
        self.hub = hub
        self.live_id = live_id
        self.sockets: dict[Connection, None] = {}
        self.last_seq: int | None = None  # the newest seq this node delivered
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._filling: list[RoomEvent] | None = None  # events held while a gap is filled
        self.queued: list[Queued] = []  # delivered in order, waiting for the flush
        self._flush_timer: asyncio.TimerHandle | None = None
        self._last_write = -math.inf  # when the room's events last went out (loop clock)

    def on_event(self, event: RoomEvent) -> None:
        if self._filling is not None:
            self._filling.append(event)
            return
        last = self.last_seq
        if last is not None:
            if event.seq <= last:
                return  # a repeat (a resubscription overlapping what was delivered)
            if event.seq > last + 1:
                self._filling = [event]
                self.hub.spawn(self._fill_gap(last))
                return
        self._deliver(event)

    def _deliver(self, event: RoomEvent) -> None:
        self.last_seq = event.seq
        wire = room_event_wire(event)
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        interval = self.hub.flush_interval
        if interval > 0:
            if self._flush_timer is not None or arrived - self._last_write < interval:
                # Written to this room's sockets less than an interval ago: wait for the
                # interval to end, and go out together with what else comes meanwhile.
                self.queued.append((event, wire, arrived))
                if self._flush_timer is None:
                    self._flush_timer = loop.call_at(self._last_write + interval, self.flush)
                return
            self._last_write = arrived  # a quiet room: this event goes out at once
        sockets = list(self.sockets)
        metrics = self.hub.metrics
        for start in range(0, len(sockets), TIMED_CHUNK):
            reached = 0
            for connection in sockets[start : start + TIMED_CHUNK]:
                reached += connection.on_room_event(event, wire)
            if reached:
                metrics.delivered([loop.time() - arrived], reached, reached)

    def flush(self) -> None:
        """Write what is queued: one buffer per socket, in seq order."""
        self._flush_timer = None
        batch, self.queued = self.queued, []
        if not batch:
            return
        self._last_write = asyncio.get_running_loop().time()
        first_seq = batch[0][0].seq
        joined = b"".join([wire for _, wire, _ in batch])
        deleted = any(event.name == ROOM_DELETED for event, _, _ in batch)
        sockets = list(self.sockets)
        metrics, loop = self.hub.metrics, asyncio.get_running_loop()
        for start in range(0, len(sockets), TIMED_CHUNK):
            reached = frames = 0
            for connection in sockets[start : start + TIMED_CHUNK]:
                taken = connection.on_room_batch(self.live_id, batch, first_seq, joined, deleted)
                if taken:
                    reached += 1
                    frames += taken
            if reached:
                now = loop.time()
                metrics.delivered([now - arrived for _, _, arrived in batch], reached, frames)

    def catch_up(self, connection: Connection) -> None:
        """Give one socket what is queued now (it is about to receive another frame)."""
        now = asyncio.get_running_loop().time()
        delays = [
            now - arrived
            for event, wire, arrived in self.queued
            if connection.on_room_event(event, wire)
        ]
        if delays:
            self.hub.metrics.delivered(delays, 1, len(delays))

    def remove(self, connection: Connection) -> None:
        self.catch_up(connection)  # what was delivered before it left still reaches it
        self.sockets.pop(connection, None)
        if not self.sockets and self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
            self.queued = []

    def resync(self) -> None:
        """The broker may have lost events: fill from the last seq delivered."""
        if self._filling is None and self.last_seq is not None:
            self._filling = []
            self.hub.spawn(self._fill_gap(self.last_seq))

    async def _fill_gap(self, since: int) -> None:
        try:
            replay = await self.hub.services.feed.replay(self.live_id, since)
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.warning("cannot fill a gap in %s after seq %d: %s", self.live_id, since, exc)
            replay = None
        held, self._filling = self._filling or [], None
        if replay is None or not replay.recovered:
            self._lost_events()
            return
        for event in [*replay.events, *held]:
            if self.last_seq is None or event.seq > self.last_seq:
                self._deliver(event)

    def _lost_events(self) -> None:
        """Events this node missed are out of history: its sockets must resume themselves."""
        self.last_seq = None
        for connection in list(self.sockets):
            connection.close(CLOSE_LOST_EVENTS, "events were lost: reconnect and resume")


class SocketHub:
    """Every open socket of this process: fan-out, pings, liveness, token expiry, caps."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.connections: set[Connection] = set()
        self._rooms: dict[str, RoomFanout] = {}
        self._users: dict[str, dict[Connection, None]] = {}
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
        services.feed.on_resync(self._resync)
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
    @staticmethod
    def room_wire(event: RoomEvent) -> bytes:
        return room_event_wire(event)

    async def attach(self, connection: Connection, live_id: str) -> RoomFanout:
        """Add the socket to the room's fan-out; returns once the node's subscription is on."""
        fanout = self._rooms.get(live_id)
        if fanout is None:
            fanout = self._rooms[live_id] = RoomFanout(self, live_id)
            fanout.sockets[connection] = None
            try:
                await self.services.feed.subscribe_room(live_id, fanout.on_event)
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
            self.services.feed.unsubscribe_room(live_id, fanout.on_event)

    def _resync(self) -> None:
        for fanout in list(self._rooms.values()):
            fanout.resync()

    def _lease_lost(self) -> None:
        """Another node let this one's socket holds lapse: its sockets' members have left.
        Each such socket is closed with 1012, and its client resumes (joining again)."""
        for fanout in list(self._rooms.values()):
            for connection in list(fanout.sockets):
                if connection.holds_membership:
                    connection.close(CLOSE_LOST_EVENTS, "membership lapsed: reconnect and resume")

    # --- users -----------------------------------------------------------------------------
    async def add_user_socket(self, connection: Connection) -> None:
        user_id = connection.identity.user_id
        sockets = self._users.get(user_id)
        if sockets is None:
            sockets = self._users[user_id] = {}
            sockets[connection] = None
            await self.services.feed.subscribe_user(user_id, self._on_user_event)
        else:
            sockets[connection] = None

    def remove_user_socket(self, connection: Connection) -> None:
        user_id = connection.identity.user_id
        sockets = self._users.get(user_id)
        if sockets is None:
            return
        sockets.pop(connection, None)
        if not sockets:
            del self._users[user_id]
            self.services.feed.unsubscribe_user(user_id, self._on_user_event)

    def _on_user_event(self, event: UserEvent) -> None:
        sockets = self._users.get(event.user_id)
        if not sockets:
            return
        wire = user_event_wire(event)
        for connection in list(sockets):
            connection.on_user_event(event, wire)

    # --- liveness --------------------------------------------------------------------------
    async def run(self) -> None:
        """Every interval (on the services' clock): ping, close the silent and the expired."""
        identities = self.services.identities
        while True:
            await identities.sleep(self.interval)
            now = identities.now()
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
        link = SocketLink(transport, early)
        transport.set_protocol(link)
        self.spawn(self._admit(link, request))

    def _admitted(self, token: str | None, address: str) -> Identity:
        """Who may open a socket now; raises the ApiError that refuses the upgrade."""
        if not token:
            raise Unauthorized("missing token")
        identity = self.services.identities.verify(token)
        self.services.rates.admit_request(identity)
        return identity

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
            identity = self._admitted(token, address)
            await services.users.ensure(identity.user_id)
            if (problem := request.problem()) is not None:
                raise BadRequest(problem)
            if not request.version_ok():
                link.refuse(
                    ws_handshake.refusal(
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
        connection = Connection(link, services, identity, self, address)
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
        link.accept(ws_handshake.switching_protocols(request), connection)
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
        address = self._addresses.of(request.remote, request.headers.get("X-Forwarded-For"))
        try:
            self._admitted(token, address)
        except ApiError as error:
            return _refusal(error)
        return _refusal(BadRequest("a WebSocket upgrade (RFC 6455) is required"))


def _refusal_bytes(error: ApiError) -> bytes:
    """An upgrade refused before it happens, as raw HTTP on the handed-over connection."""
    headers = {}
    if isinstance(error, TooManyRequests) and error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    body = {"code": error.code, "message": error.message}
    return ws_handshake.refusal(error.http_status, body, headers)


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
