"""The Redis backend beyond the shared contract: what two nodes do at once to one Redis
(two store instances on one redis-server), which the memory store cannot show."""

from __future__ import annotations

import asyncio

from livesignal.signal.backends.base import Tx
from livesignal.signal.model.records import Member
from tests.engines import redis_engine
from tests.signal.backends.test_conformance import bump, new_room, put


async def test_two_store_instances_on_one_redis_serialize_their_steps(redis_url: str) -> None:
    """What two nodes do at once to one record: every change kept, seq in change order, and
    the events each node sees agree with the final state."""
    first, second = await redis_engine(redis_url), await redis_engine(redis_url)
    try:
        await put(first, new_room("r1"))
        seen: dict[str, list[int]] = {"first": [], "second": []}
        await first.broker.subscribe_room("r1", lambda e: seen["first"].append(e.data["n"]))
        await second.broker.subscribe_room("r1", lambda e: seen["second"].append(e.data["n"]))

        engines = [first, second] * 20
        await asyncio.gather(*(engine.store.transact(bump) for engine in engines))
        room = await second.store.get_room("r1")
        assert room is not None and room.extends["n"] == "40"
        await first.settle(lambda: len(seen["first"]) == 40 and len(seen["second"]) == 40)
        assert seen["first"] == seen["second"] == list(range(1, 41))
    finally:
        for engine in (first, second):
            for close in engine.closers:
                await close()


async def test_a_pair_read_on_redis_is_checked_at_commit_like_any_read(redis_url: str) -> None:
    """Another node changing the member between the pair read and the commit makes the step
    run again: no lost update."""
    first, second = await redis_engine(redis_url), await redis_engine(redis_url)
    try:
        now = first.store.now()
        await put(first, new_room("r1"), Member("u1", "r1", rest_deadline=now + 10))
        runs = 0

        async def extend(tx: Tx) -> float:
            nonlocal runs
            runs += 1
            _, member = await tx.room_and_member("r1", "u1")
            assert member is not None
            if runs == 1:  # the other node moves the deadline after this step read it
                await put(second, Member("u1", "r1", rest_deadline=now + 20))
            member.rest_deadline += 100
            tx.put_member(member)
            return member.rest_deadline

        assert (await first.store.transact(extend)).result == now + 120
        assert runs == 2
    finally:
        for engine in (first, second):
            for close in engine.closers:
                await close()
