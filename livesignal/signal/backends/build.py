"""The store, broker and clock of one backend, and what starting and stopping them takes.

`memory`: everything in this process (the embedded default). `redis`: shared by every node
(PROTOCOL §5); start-up waits for Redis, retrying with a log line, rather than failing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from livesignal.signal.backends.base import Broker, Store
from livesignal.signal.backends.memory import MemoryBroker, MemoryStore
from livesignal.signal.model.clock import Clock, SystemClock

log = logging.getLogger(__name__)


async def _nothing() -> None:
    return None


async def _own_secret(name: str, value: str) -> str:
    return value  # one process: its own random secret is the only one


@dataclass
class Backend:
    store: Store
    broker: Broker
    clock: Clock
    start: Callable[[], Awaitable[None]] = _nothing  # returns once the backend answers
    close: Callable[[], Awaitable[None]] = _nothing
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # (name, this node's random value) -> the value every node uses (the first node's)
    share_secret: Callable[[str, str], Awaitable[str]] = _own_secret
    redis: Any = None  # the Redis client, for what else is shared through it (media pins)


def memory_backend(clock: Clock | None = None) -> Backend:
    clock = clock or SystemClock()
    broker = MemoryBroker(clock)
    return Backend(store=MemoryStore(broker, clock), broker=broker, clock=clock)


def build_backend(backend: str, redis_url: str, clock: Clock | None = None) -> Backend:
    if backend == "redis":
        from livesignal.signal.backends.redis.backend import redis_backend

        return redis_backend(redis_url, clock)
    return memory_backend(clock)
