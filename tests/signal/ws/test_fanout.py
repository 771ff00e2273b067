"""RoomFanout, one room's delivery on a node: watermarks, gap filling, resync, coalescing.

Driven with a fake host (its clock a ManualClock) and fake sockets: every timing rule of
`[ws] flush_interval` is checked by moving the clock, not by waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from livesignal.http.metrics import FanoutMetrics
from livesignal.signal.model.clock import ManualClock
from livesignal.signal.model.events import CHAT_MESSAGE, Replay, RoomEvent
from livesignal.signal.ws.fanout import RoomFanout
from livesignal.signal.ws.protocol import CLOSE_LOST_EVENTS
from livesignal.signal.ws.session import Queued

ROOM = "live_a"


def event(seq: int) -> RoomEvent:
    return RoomEvent(ROOM, seq, CHAT_MESSAGE, {"text": f"m{seq}"}, 0.0)


class Host:
    def __init__(self, flush_interval: float = 0.0, history: list[RoomEvent] | None = None):
        self.clock = ManualClock()
        self.flush_interval = flush_interval
        self.metrics = FanoutMetrics()
        self.history = history  # None: the history is gone (not recovered)
        self.replays: list[int] = []
        self.tasks: list[asyncio.Future[None]] = []

    def spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def replay(self, live_id: str, since: int) -> Replay:
        self.replays.append(since)
        if self.history is None:
            return Replay(recovered=False, seq=0, events=[])
        wanted = [e for e in self.history if e.seq > since]
        return Replay(recovered=True, seq=self.history[-1].seq, events=wanted)

    async def settle(self) -> None:
        while self.tasks:
            await self.tasks.pop(0)


class Socket:
    """Takes every event (a socket's own watermark is SocketSession's, tested apart)."""

    def __init__(self) -> None:
        self.writes: list[list[int]] = []  # the seqs of each write
        self.closed: int | None = None

    def on_room_event(self, event: RoomEvent, wire: bytes) -> bool:
        self.writes.append([event.seq])
        return True

    def on_room_batch(
        self, live_id: str, batch: list[Queued], first_seq: int, joined: bytes, deleted: bool
    ) -> int:
        self.writes.append([e.seq for e, _, _ in batch])
        return len(batch)

    def close(self, code: int, message: str) -> None:
        self.closed = code

    @property
    def seqs(self) -> list[int]:
        return [seq for write in self.writes for seq in write]


async def fanout(host: Host, sockets: int = 2) -> tuple[RoomFanout, list[Socket]]:
    room = RoomFanout(host, ROOM)
    members = [Socket() for _ in range(sockets)]
    for member in members:
        room.sockets[member] = None
    return room, members


async def test_repeats_are_dropped_at_the_node() -> None:
    host = Host()
    room, (a, _) = await fanout(host)
    for seq in (1, 2, 2, 1, 3):
        room.on_event(event(seq))
    assert a.seqs == [1, 2, 3]


async def test_a_gap_is_filled_from_history_before_delivery_goes_on() -> None:
    host = Host(history=[event(seq) for seq in range(1, 6)])
    room, (a, b) = await fanout(host)
    room.on_event(event(1))
    room.on_event(event(4))  # 2 and 3 never came: a gap
    room.on_event(event(5))  # held while the gap is filled
    assert a.seqs == [1]
    await host.settle()
    assert host.replays == [1]
    assert a.seqs == b.seqs == [1, 2, 3, 4, 5]  # in order, each once


async def test_a_gap_that_history_lost_closes_the_rooms_sockets_with_1012() -> None:
    host = Host(history=None)
    room, members = await fanout(host)
    room.on_event(event(1))
    room.on_event(event(3))
    await host.settle()
    assert [member.closed for member in members] == [CLOSE_LOST_EVENTS] * 2
    assert room.last_seq is None  # what comes next starts afresh


async def test_a_resync_fills_what_the_broker_may_have_dropped() -> None:
    host = Host(history=[event(seq) for seq in range(1, 4)])
    room, (a, _) = await fanout(host)
    room.on_event(event(1))
    room.resync()  # the broker reconnected: 2 and 3 were published meanwhile
    room.on_event(event(3))  # the subscription is back before the fill ends: held
    await host.settle()
    assert a.seqs == [1, 2, 3]


@pytest.mark.parametrize("interval", [0.02, 0.5])
async def test_coalescing_a_quiet_room_writes_at_once_then_waits_out_the_interval(
    interval: float,
) -> None:
    host = Host(flush_interval=interval)
    room, (a, b) = await fanout(host)
    room.on_event(event(1))  # a quiet room: at once
    assert a.writes == [[1]]
    host.clock.advance(interval / 4)
    room.on_event(event(2))  # within the interval of that write: waits
    host.clock.advance(interval / 4)
    room.on_event(event(3))
    assert a.writes == [[1]]
    host.clock.advance(interval / 2 - 1e-6)
    assert a.writes == [[1]]  # not a moment before the interval ends
    host.clock.advance(2e-6)
    assert a.writes == b.writes == [[1], [2, 3]]  # one write per socket for the batch
    host.clock.advance(interval / 2)
    room.on_event(event(4))  # within an interval of that flush: waits again
    assert a.writes == [[1], [2, 3]]
    host.clock.advance(interval)
    assert a.writes == [[1], [2, 3], [4]]
    host.clock.advance(2 * interval)
    room.on_event(event(5))  # quiet again: at once
    assert a.writes[-1] == [5]


async def test_coalescing_counts_frames_writes_and_the_delay_each_frame_waited() -> None:
    host = Host(flush_interval=0.02)
    room, _ = await fanout(host, sockets=3)
    room.on_event(event(1))
    host.clock.advance(0.005)
    room.on_event(event(2))  # waits 0.015
    room.on_event(event(3))
    host.clock.advance(0.015)
    metrics = host.metrics
    assert metrics.frames == 3 * 3
    assert metrics.writes == 3 + 3  # the first at once, then the batch
    assert metrics.delay.count == 9
    assert metrics.delay.total == pytest.approx(3 * (0 + 0.015 + 0.015), abs=1e-5)


async def test_a_socket_about_to_get_another_frame_first_takes_what_is_queued() -> None:
    host = Host(flush_interval=0.02)
    room, (a, b) = await fanout(host)
    room.on_event(event(1))
    room.on_event(event(2))
    room.catch_up(a)  # e.g. a reply for `a` is about to be written
    assert a.writes == [[1], [2]]
    assert b.writes == [[1]]
    host.clock.advance(0.02)
    assert b.writes == [[1], [2]]


async def test_the_last_socket_leaving_cancels_the_flush() -> None:
    host = Host(flush_interval=0.02)
    room, (a, b) = await fanout(host)
    room.on_event(event(1))
    room.on_event(event(2))
    room.remove(a)  # what was delivered before it left still reaches it
    room.remove(b)
    assert a.seqs == b.seqs == [1, 2]
    assert host.clock.pending() == 0
    assert room.queued == []
