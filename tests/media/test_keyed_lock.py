"""One client's requests never run together, and no lock outlives its last user."""

from __future__ import annotations

import asyncio

import pytest

from livesignal.media.keyed_lock import KeyedLock


async def test_a_request_arriving_while_another_waits_still_queues_behind_it() -> None:
    # exit holds the key's lock while an exchange waits; a third request arrives after exit
    # is done. With a lock dropped at exit, the third would run alongside the waiter.
    locks: KeyedLock[str] = KeyedLock()
    inside: set[str] = set()
    overlaps: list[tuple[str, ...]] = []
    exit_done = asyncio.Event()

    async def request(name: str, hold: float) -> None:
        async with locks.hold("alice"):
            if inside:
                overlaps.append((name, *inside))
            inside.add(name)
            await asyncio.sleep(hold)
            inside.discard(name)
        if name == "exit":
            exit_done.set()

    async def late() -> None:
        await exit_done.wait()
        await request("late", 0.01)

    await asyncio.gather(request("exit", 0.01), request("waiter", 0.05), late())
    assert overlaps == []
    assert len(locks) == 0  # nothing kept once nobody holds or waits


async def test_locks_are_per_key_and_forgotten_after_a_failure() -> None:
    locks: KeyedLock[str] = KeyedLock()
    order: list[str] = []

    async def failing() -> None:
        async with locks.hold("a"):
            raise ValueError("refused offer")

    async def other_key() -> None:
        async with locks.hold("b"):
            order.append("b")

    async with locks.hold("a"):
        await other_key()  # another key is never blocked by this one
        assert len(locks) == 1
    assert order == ["b"]
    with pytest.raises(ValueError):
        await failing()
    assert len(locks) == 0
