"""Store + broker pairs ("engines") for the conformance suite, one per backend.

The memory engine is the embedded default; the Redis engine (added with the Redis backend)
talks to a real redis-server started by the tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livesignal.signal.backends.base import Broker, Store
from livesignal.signal.backends.memory import MemoryBroker, MemoryStore
from livesignal.signal.model.clock import ManualClock


@dataclass
class Engine:
    store: Store
    broker: Broker
    clock: ManualClock
    quiet: float = 0.0  # how long a stray asynchronous delivery could take to show up
    closers: list[Callable[[], Any]] = field(default_factory=list)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def settle(self, done: Callable[[], bool] | None = None, timeout: float = 2.0) -> None:
        """Let asynchronous delivery catch up: until `done()` holds (bounded), or, with no
        condition, long enough for a delivery that should not happen to show up."""
        if done is None:
            await asyncio.sleep(self.quiet)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done() and loop.time() < deadline:
            await asyncio.sleep(0.002)


async def redis_engine(url: str) -> Engine:
    """A Redis engine on a running redis-server; `closers` end its connections."""
    from livesignal.signal.backends.redis.backend import redis_backend

    clock = ManualClock()
    backend = redis_backend(url, clock)
    await backend.start()
    return Engine(
        store=backend.store,
        broker=backend.broker,
        clock=clock,
        quiet=0.05,
        closers=[backend.close],
    )


def memory_engine() -> Engine:
    clock = ManualClock()
    broker = MemoryBroker(clock)
    return Engine(store=MemoryStore(broker, clock), broker=broker, clock=clock)
