"""One room's fan-out on this node: seq watermarks, gap filling, and write coalescing.

A node subscribes to a room's events only while it has a socket attached to that room. Each
event's wire frame is built once per node and written to every socket that wants it. The node
remembers the last seq it delivered per room: anything at or below it is a repeat; anything
past the next one is a gap, filled from the room's history before delivery goes on (or, when
that history is gone, the room's sockets are closed with 1012 so that their clients resume).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from typing import Protocol

from livesignal.http.metrics import FanoutMetrics
from livesignal.signal.model.clock import Clock, Timer
from livesignal.signal.model.errors import StoreUnavailable
from livesignal.signal.model.events import ROOM_DELETED, Replay, RoomEvent
from livesignal.signal.ws.protocol import CLOSE_LOST_EVENTS, room_event_wire
from livesignal.signal.ws.session import Queued

log = logging.getLogger(__name__)


class RoomSocket(Protocol):
    """A socket as its room's fan-out sees it (ws/connection.py)."""

    def on_room_event(self, event: RoomEvent, wire: bytes) -> bool:
        """Deliver one event unless held back or delivered already; whether it went."""
        ...

    def on_room_batch(
        self, live_id: str, batch: list[Queued], first_seq: int, joined: bytes, deleted: bool
    ) -> int:
        """Deliver a coalesced run of events; how many of them went."""
        ...

    def close(self, code: int, message: str) -> None: ...


class FanoutHost(Protocol):
    """What every fan-out of a node shares (the node's SocketHub)."""

    clock: Clock  # when events arrive, how long they wait, when the flush runs
    flush_interval: float
    metrics: FanoutMetrics

    def spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]: ...

    async def replay(self, live_id: str, since: int) -> Replay: ...


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

    def __init__(self, hub: FanoutHost, live_id: str) -> None:
        self.hub = hub
        self.live_id = live_id
        self.sockets: dict[RoomSocket, None] = {}
        self.last_seq: int | None = None  # the newest seq this node delivered
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._filling: list[RoomEvent] | None = None  # events held while a gap is filled
        self.queued: list[Queued] = []  # delivered in order, waiting for the flush
        self._flush_timer: Timer | None = None
        self._last_write = -math.inf  # when the room's events last went out (hub's clock)

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
        hub = self.hub
        clock = hub.clock
        arrived = clock.now()
        interval = hub.flush_interval
        if interval > 0:
            if self._flush_timer is not None or arrived - self._last_write < interval:
                # Written to this room's sockets less than an interval ago: wait for the
                # interval to end, and go out together with what else comes meanwhile.
                self.queued.append((event, wire, arrived))
                if self._flush_timer is None:
                    wait = self._last_write + interval - arrived
                    self._flush_timer = clock.call_later(wait, self.flush)
                return
            self._last_write = arrived  # a quiet room: this event goes out at once
        sockets = list(self.sockets)
        metrics = hub.metrics
        for start in range(0, len(sockets), TIMED_CHUNK):
            reached = 0
            for socket in sockets[start : start + TIMED_CHUNK]:
                reached += socket.on_room_event(event, wire)
            if reached:
                metrics.delivered([clock.now() - arrived], reached, reached)

    def flush(self) -> None:
        """Write what is queued: one buffer per socket, in seq order."""
        self._flush_timer = None
        batch, self.queued = self.queued, []
        if not batch:
            return
        clock = self.hub.clock
        self._last_write = clock.now()
        first_seq = batch[0][0].seq
        joined = b"".join([wire for _, wire, _ in batch])
        deleted = any(event.name == ROOM_DELETED for event, _, _ in batch)
        sockets = list(self.sockets)
        metrics = self.hub.metrics
        for start in range(0, len(sockets), TIMED_CHUNK):
            reached = frames = 0
            for socket in sockets[start : start + TIMED_CHUNK]:
                taken = socket.on_room_batch(self.live_id, batch, first_seq, joined, deleted)
                if taken:
                    reached += 1
                    frames += taken
            if reached:
                now = clock.now()
                metrics.delivered([now - arrived for _, _, arrived in batch], reached, frames)

    def catch_up(self, socket: RoomSocket) -> None:
        """Give one socket what is queued now (it is about to receive another frame)."""
        now = self.hub.clock.now()
        delays = [
            now - arrived
            for event, wire, arrived in self.queued
            if socket.on_room_event(event, wire)
        ]
        if delays:
            self.hub.metrics.delivered(delays, 1, len(delays))

    def remove(self, socket: RoomSocket) -> None:
        self.catch_up(socket)  # what was delivered before it left still reaches it
        self.sockets.pop(socket, None)
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
            replay = await self.hub.replay(self.live_id, since)
        except (StoreUnavailable, ConnectionError, TimeoutError, OSError) as exc:
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
        for socket in list(self.sockets):
            socket.close(CLOSE_LOST_EVENTS, "events were lost: reconnect and resume")
