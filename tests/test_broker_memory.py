"""The memory broker: per-room seq, ordered delivery, bounded history and replay."""

from __future__ import annotations

from livesignal.signal.broker.base import HISTORY_SIZE
from livesignal.signal.broker.memory import MemoryBroker
from livesignal.signal.clock import ManualClock
from livesignal.signal.events import RoomEvent, UserEvent


async def test_seq_is_per_room_and_delivery_is_in_order() -> None:
    broker = MemoryBroker(ManualClock())
    seen: list[tuple[str, int]] = []
    broker.subscribe_room("a", lambda e: seen.append((e.live_id, e.seq)))
    for _ in range(3):
        await broker.publish_room("a", "chat.message", {})
        await broker.publish_room("b", "chat.message", {})
    assert seen == [("a", 1), ("a", 2), ("a", 3)]
    assert await broker.current_seq("b") == 3
    assert await broker.current_seq("never") == 0


async def test_a_failing_listener_does_not_starve_the_others() -> None:
    broker = MemoryBroker(ManualClock())
    got: list[RoomEvent] = []

    def broken(event: RoomEvent) -> None:
        raise RuntimeError("boom")

    broker.subscribe_room("a", broken)
    broker.subscribe_room("a", got.append)
    await broker.publish_room("a", "room.started", {})
    assert len(got) == 1


async def test_user_events_reach_every_listener_of_the_user_only() -> None:
    broker = MemoryBroker(ManualClock())
    phone: list[UserEvent] = []
    tablet: list[UserEvent] = []
    other: list[UserEvent] = []
    broker.subscribe_user("bob", phone.append)
    broker.subscribe_user("bob", tablet.append)
    broker.subscribe_user("carol", other.append)
    await broker.publish_user("bob", "relay.invited", {"relay": {}})
    assert len(phone) == len(tablet) == 1 and other == []
    assert '"event":"relay.invited"' in phone[0].frame and "seq" not in phone[0].frame
    broker.unsubscribe_user("bob", phone.append)
    await broker.publish_user("bob", "relay.canceled", {"relay": {}})
    assert len(phone) == 1 and len(tablet) == 2


async def test_replay_holds_the_newest_events_for_five_minutes() -> None:
    clock = ManualClock()
    broker = MemoryBroker(clock)
    for index in range(HISTORY_SIZE + 10):
        await broker.publish_room("a", "chat.message", {"i": index})
    recent = await broker.replay("a", HISTORY_SIZE)
    assert recent.recovered and [e.seq for e in recent.events] == list(
        range(HISTORY_SIZE + 1, HISTORY_SIZE + 11)
    )
    too_old = await broker.replay("a", 5)
    assert not too_old.recovered and too_old.events == [] and too_old.seq == HISTORY_SIZE + 10
    clock.advance(301)
    await broker.publish_room("a", "chat.message", {})
    aged = await broker.replay("a", HISTORY_SIZE + 5)
    assert not aged.recovered
    assert (await broker.replay("a", HISTORY_SIZE + 10)).recovered
    await broker.trim()
    assert (await broker.replay("a", HISTORY_SIZE + 10)).events[0].seq == HISTORY_SIZE + 11
