"""The Store + Broker contract (livesignal/signal/backends/base.py), held by every backend.

Written against the interfaces only; the `engine` fixture follows the test's backend, and every
test is marked both_backends, so the embedded memory store and the Redis store answer to the same
rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from livesignal.signal.backends.base import HISTORY_SIZE, Tx
from livesignal.signal.model.errors import NotFound
from livesignal.signal.model.events import RoomEvent, UserEvent
from livesignal.signal.model.records import Member, Relay, RelayStatus, Room, RoomStatus, User
from tests.engines import Engine, memory_engine, redis_engine

# The contract every backend holds: each test runs against the memory and the Redis engine.
pytestmark = pytest.mark.both_backends


@pytest.fixture
async def engine(request: pytest.FixtureRequest, backend: str) -> AsyncIterator[Engine]:
    """The store and broker of the test's backend (tests/conftest.py parametrizes it)."""
    if backend == "memory":
        yield memory_engine()
        return
    engine = await redis_engine(request.getfixturevalue("redis_url"))
    yield engine
    for close in engine.closers:
        await close()


def new_room(live_id: str, anchor: str = "alice", status: RoomStatus = RoomStatus.LIVE) -> Room:
    return Room(
        live_id=live_id, title=live_id, anchor_id=anchor, chat_id=1, created_at=1.0, status=status
    )


async def put(engine: Engine, *records: Any) -> None:
    async def step(tx: Tx) -> None:
        for record in records:
            if isinstance(record, Room):
                await tx.room(record.live_id)  # a room is read before it is saved
                tx.put_room(record)
            elif isinstance(record, Relay):
                tx.put_relay(record)
            elif isinstance(record, Member):
                tx.put_member(record)
            elif isinstance(record, User):
                tx.put_user(record)

    await engine.store.transact(step)


async def bump(tx: Tx) -> int:
    """Read-modify-write one record and announce the value: what conflicting nodes do."""
    room = await tx.room("r1")
    assert room is not None
    count = int(room.extends.get("n", "0")) + 1
    room.extends["n"] = str(count)
    tx.put_room(room)
    tx.emit("r1", "room.extends", {"n": count})
    return count


async def test_next_id_counts_per_name(engine: Engine) -> None:
    store = engine.store
    assert [await store.next_id("a"), await store.next_id("a"), await store.next_id("b")] == [
        1,
        2,
        1,
    ]


async def test_a_step_that_raises_writes_nothing_and_publishes_nothing(engine: Engine) -> None:
    store = engine.store
    await put(engine, new_room("r1"))
    seen: list[RoomEvent] = []
    await engine.broker.subscribe_room("r1", seen.append)

    async def failing(tx: Tx) -> None:
        room = await tx.room("r1")
        assert room is not None
        room.title = "changed"
        tx.put_room(room)
        await tx.room("r2")
        tx.put_room(new_room("r2"))
        tx.emit("r1", "room.extends", {})
        raise NotFound("no")

    with pytest.raises(NotFound):
        await store.transact(failing)
    stored = await store.get_room("r1")
    assert stored is not None and stored.title == "r1"
    assert await store.get_room("r2") is None
    assert await engine.broker.current_seq("r1") == 0
    await engine.settle()
    assert seen == []


async def test_records_handed_out_never_change(engine: Engine) -> None:
    store = engine.store
    await put(engine, new_room("r1"))
    before = await store.get_room("r1")

    async def rename(tx: Tx) -> None:
        room = await tx.room("r1")
        assert room is not None
        room.title = "renamed"
        room.extends["k"] = "v"
        tx.put_room(room)

    await store.transact(rename)
    after = await store.get_room("r1")
    assert before is not None and (before.title, before.extends) == ("r1", {})
    assert after is not None and (after.title, after.extends) == ("renamed", {"k": "v"})


async def test_events_of_a_step_get_consecutive_seqs_and_are_delivered_in_order(
    engine: Engine,
) -> None:
    store = engine.store
    await put(engine, new_room("r1"), new_room("r2"))
    seen: list[tuple[str, int, str]] = []
    told: list[UserEvent] = []
    await engine.broker.subscribe_room("r1", lambda e: seen.append((e.live_id, e.seq, e.name)))
    await engine.broker.subscribe_user("bob", told.append)

    async def step(tx: Tx) -> None:
        tx.emit("r1", "room.started", {})
        tx.emit("r2", "room.started", {})
        tx.emit("r1", "chat.message", {"text": "hi"})
        tx.tell("bob", "relay.invited", {"relay": {"sid": "x"}})

    done = await store.transact(step)
    assert [(e.live_id, e.seq) for e in done.events] == [("r1", 1), ("r2", 1), ("r1", 2)]
    assert done.seqs["r1"] == 2 and done.seqs["r2"] == 1
    await engine.settle(lambda: len(seen) == 2 and len(told) == 1)
    assert seen == [("r1", 1, "room.started"), ("r1", 2, "chat.message")]
    assert told[0].name == "relay.invited" and told[0].data == {"relay": {"sid": "x"}}
    assert await engine.broker.current_seq("r1") == 2


async def test_concurrent_steps_on_one_record_lose_no_update_and_seq_follows_them(
    engine: Engine,
) -> None:
    store = engine.store
    await put(engine, new_room("r1"))

    results = await asyncio.gather(*(store.transact(bump) for _ in range(30)))
    assert sorted(r.result for r in results) == list(range(1, 31))
    room = await store.get_room("r1")
    assert room is not None and room.extends["n"] == "30"
    replay = await engine.broker.replay("r1", 0)
    # Seq order is the order of the changes: event k carries the k-th value.
    assert [e.data["n"] for e in replay.events] == list(range(1, 31))
    assert [e.seq for e in replay.events] == list(range(1, 31))


async def test_rooms_by_status_and_open_rooms_per_anchor(engine: Engine) -> None:
    store = engine.store
    await put(
        engine,
        new_room("c1", status=RoomStatus.CREATED),
        new_room("l1"),
        new_room("l2", anchor="bob"),
    )

    async def open_of(user_id: str) -> int:
        async def step(tx: Tx) -> int:
            return await tx.open_rooms(user_id)

        return (await store.transact(step)).result

    assert {r.live_id for r in await store.rooms_with_status([RoomStatus.LIVE])} == {"l1", "l2"}
    assert (await open_of("alice"), await open_of("bob"), await open_of("carol")) == (2, 1, 0)
    ended = await store.get_room("l1")
    assert ended is not None

    async def end(tx: Tx) -> None:
        room = await tx.room("l1")
        assert room is not None
        room.status = RoomStatus.ENDED
        tx.put_room(room)

    await store.transact(end)
    assert {r.live_id for r in await store.rooms_with_status([RoomStatus.LIVE])} == {"l2"}
    assert {r.live_id for r in await store.rooms_with_status([RoomStatus.ENDED])} == {"l1"}
    assert await open_of("alice") == 1

    async def drop(tx: Tx) -> None:
        room = await tx.room("c1")
        assert room is not None
        tx.drop_room(room)

    await store.transact(drop)
    assert await store.get_room("c1") is None
    assert await open_of("alice") == 0
    assert await store.rooms_with_status([RoomStatus.CREATED]) == []


async def test_rooms_of_an_anchor_are_all_of_theirs_in_any_status_until_deleted(
    engine: Engine,
) -> None:
    store = engine.store
    first = new_room("a1", status=RoomStatus.CREATED)
    first.create_order = 1
    ended = new_room("a2", status=RoomStatus.ENDED)
    ended.create_order = 2
    live = new_room("a3")
    live.create_order = 3
    await put(engine, first, ended, live, new_room("b1", anchor="bob"))

    async def ids(anchor: str) -> list[str]:
        return [room.live_id for room in await store.rooms_of_anchor(anchor)]

    assert await ids("alice") == ["a1", "a2", "a3"]  # every status, in creation order
    assert await ids("bob") == ["b1"]
    assert await ids("carol") == []

    async def drop(tx: Tx) -> None:
        room = await tx.room("a2")
        assert room is not None
        tx.drop_room(room)

    await store.transact(drop)
    assert await ids("alice") == ["a1", "a3"]


async def test_members_their_order_presence_and_lapse(engine: Engine) -> None:
    store = engine.store
    await put(engine, new_room("r1"))
    now = store.now()
    await put(
        engine,
        Member("u1", "r1", rest_deadline=now + 10, join_order=1.0),
        Member("u2", "r1", rest_deadline=0.0, holds={"node-a": 1}, join_order=2.0),
        Member("u3", "r1", rest_deadline=now + 5, join_order=3.0),
    )
    present = await store.present_members("r1", now)
    assert [m.user_id for m in present] == ["u1", "u2", "u3"]
    assert await store.present_count("r1", now + 7) == 2
    assert await store.lapsing_members(now + 7) == [("r1", "u3")]
    member = await store.get_member("u2", "r1")
    assert member is not None and member.holds == {"node-a": 1}

    async def where(user_id: str) -> str | None:
        async def step(tx: Tx) -> str | None:
            return await tx.user_room(user_id)

        return (await store.transact(step)).result

    assert await where("u1") == "r1"

    async def leave(tx: Tx) -> None:
        found = await tx.member("r1", "u1")
        assert found is not None
        tx.drop_member(found)

    await store.transact(leave)
    assert await where("u1") is None
    assert [m.user_id for m in await store.present_members("r1", now)] == ["u2", "u3"]
    assert await store.present_count("r1", now) == 2
    assert await store.present_count("r1", now + 7) == 1  # u3's deadline passed

    async def swap(tx: Tx) -> None:
        """u2's socket goes (a past deadline is all it keeps); u3 opens one."""
        u2, u3 = await tx.member("r1", "u2"), await tx.member("r1", "u3")
        assert u2 is not None and u3 is not None
        u2.holds.clear()
        u3.holds["node-b"] = 1
        tx.put_member(u2)
        tx.put_member(u3)

    await store.transact(swap)
    assert await store.present_count("r1", now) == 1
    assert await store.present_count("r1", now + 1000) == 1  # held by a socket: no deadline


async def test_dropping_a_room_drops_its_members_and_history(engine: Engine) -> None:
    store = engine.store
    await put(engine, new_room("r1"), Member("u1", "r1", rest_deadline=store.now() + 10))

    async def chat(tx: Tx) -> None:
        tx.emit("r1", "chat.message", {})

    await store.transact(chat)

    async def drop(tx: Tx) -> None:
        room = await tx.room("r1")
        assert room is not None
        tx.emit("r1", "room.deleted", {})
        tx.drop_room(room)

    done = await store.transact(drop)
    assert done.events[0].seq == 2
    assert await store.get_member("u1", "r1") is None
    assert await store.present_members("r1", store.now()) == []
    assert await store.present_count("r1", store.now()) == 0
    assert (await engine.broker.replay("r1", 0)).events == []


async def test_visits_count_pv_and_uv_exactly(engine: Engine) -> None:
    store = engine.store
    await put(engine, new_room("r1"))

    def visit(user_id: str) -> Any:
        async def step(tx: Tx) -> None:
            tx.visit("r1", user_id)

        return store.transact(step)

    await asyncio.gather(*(visit(f"u{i % 5}") for i in range(20)))
    room = await store.get_room("r1")
    assert room is not None and (room.pv, room.uv) == (20, 5)


async def test_relays_active_until_final(engine: Engine) -> None:
    store = engine.store
    relay = Relay("p1", "alice", "r1", "r2", "bob", created_at=1.0)
    await put(engine, relay)
    assert [r.relay_id for r in await store.active_relays()] == ["p1"]

    async def end(tx: Tx) -> None:
        found = await tx.relay("p1")
        assert found is not None
        found.status = RelayStatus.ENDED
        tx.put_relay(found)

    await store.transact(end)
    assert await store.active_relays() == []
    stored = await store.get_relay("p1")
    assert stored is not None and stored.status == RelayStatus.ENDED


async def test_users(engine: Engine) -> None:
    store = engine.store
    await put(engine, User("alice", 1_000_000, "alice", extends={"a": "1"}))
    found = await store.get_users(["alice", "nobody"])
    assert set(found) == {"alice"} and found["alice"].extends == {"a": "1"}


async def test_node_leases_and_holds(engine: Engine) -> None:
    store = engine.store
    now = store.now()
    await store.renew_node("node-a", now + 10)
    await store.renew_node("node-b", now + 1)
    await put(engine, new_room("r1"), Member("u1", "r1", 0.0, holds={"node-b": 2}))
    assert await store.lapsed_nodes(now + 5) == ["node-b"]
    assert await store.node_holds("node-b") == [("r1", "u1")]
    await store.forget_node("node-b")
    assert await store.lapsed_nodes(now + 5) == []
    assert await store.node_holds("node-b") == []


async def test_history_holds_the_newest_events_for_five_minutes(engine: Engine) -> None:
    store, broker = engine.store, engine.broker

    async def chat(tx: Tx) -> None:
        tx.emit("r1", "chat.message", {})

    # At least the newest HISTORY_SIZE are held (Redis trims approximately, keeping more).
    total = HISTORY_SIZE + 300
    for _ in range(total):
        await store.transact(chat)
    recent = await broker.replay("r1", total - HISTORY_SIZE)
    assert recent.recovered
    assert [e.seq for e in recent.events] == list(range(total - HISTORY_SIZE + 1, total + 1))
    too_old = await broker.replay("r1", 5)
    assert not too_old.recovered and too_old.events == [] and too_old.seq == total
    engine.advance(301)
    await store.transact(chat)
    assert not (await broker.replay("r1", total - 5)).recovered
    fresh = await broker.replay("r1", total)
    assert fresh.recovered and [e.seq for e in fresh.events] == [total + 1]
    await broker.trim()
    assert (await broker.replay("r1", total)).events[0].seq == total + 1
    assert (await broker.replay("never", 0)).recovered


async def test_room_and_member_read_together_are_what_each_read_gives(engine: Engine) -> None:
    store = engine.store
    now = store.now()
    await put(engine, new_room("r1"), Member("u1", "r1", rest_deadline=now + 10, join_order=1.0))

    async def extend(tx: Tx) -> float:
        room, member = await tx.room_and_member("r1", "u1")
        assert room is not None and room.live_id == "r1" and (await tx.room("r1")) is room
        assert member is not None and (await tx.member("r1", "u1")) is member
        member.rest_deadline += 100
        tx.put_member(member)
        return member.rest_deadline

    assert (await store.transact(extend)).result == now + 110
    found = await store.get_member("u1", "r1")
    assert found is not None and found.rest_deadline == now + 110

    async def missing(tx: Tx) -> tuple[Any, Any]:
        return await tx.room_and_member("nope", "u1")

    assert (await store.transact(missing)).result == (None, None)
