"""The backend the settings name: `memory`, everything in this process (the embedded
default), or `redis`, shared by every node (PROTOCOL §5; backends/redis/backend.py)."""

from __future__ import annotations

from livesignal.signal.backends.base import Backend
from livesignal.signal.backends.memory import MemoryBroker, MemoryStore
from livesignal.signal.model.clock import Clock, SystemClock


def memory_backend(clock: Clock | None = None) -> Backend:
    clock = clock or SystemClock()
    broker = MemoryBroker(clock)
    return Backend(store=MemoryStore(broker, clock), broker=broker, clock=clock)


def build_backend(backend: str, redis_url: str, clock: Clock | None = None) -> Backend:
    if backend == "redis":
        from livesignal.signal.backends.redis.backend import redis_backend

        return redis_backend(redis_url, clock)
    return memory_backend(clock)
