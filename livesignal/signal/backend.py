"""The store, broker and clock of one backend, and what starting and stopping them takes.

`memory`: everything in this process (the embedded default). `redis`: shared by every node
(PROTOCOL §5); start-up waits for Redis, retrying with a log line, rather than failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from livesignal.signal.broker.base import Broker
from livesignal.signal.broker.memory import MemoryBroker
from livesignal.signal.clock import Clock, SystemClock
from livesignal.signal.store.base import Store
from livesignal.signal.store.memory import MemoryStore

log = logging.getLogger(__name__)

STARTUP_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
REDIS_CONNECTIONS = 64  # per process; pub/sub has its own
REDIS_POOL_WAIT = 5.0  # seconds a step waits for a free connection before answering 503


async def _nothing() -> None:
    return None


@dataclass
class Backend:
    store: Store
    broker: Broker
    clock: Clock
    start: Callable[[], Awaitable[None]] = _nothing  # returns once the backend answers
    close: Callable[[], Awaitable[None]] = _nothing
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    redis: Any = None  # the Redis client, for what else is shared through it (media pins)


def memory_backend(clock: Clock | None = None) -> Backend:
    clock = clock or SystemClock()
    broker = MemoryBroker(clock)
    return Backend(store=MemoryStore(broker, clock), broker=broker, clock=clock)


def redis_backend(url: str, clock: Clock | None = None) -> Backend:
    """A Redis backend; with `clock` None, time is Redis' own (redis/clock.py)."""
    import redis.asyncio as aioredis

    from livesignal.signal.redis.broker import RedisBroker
    from livesignal.signal.redis.clock import RedisClock
    from livesignal.signal.redis.store import RedisStore

    # A bounded pool: a burst of steps (1000 sockets closing at once) waits for a connection
    # instead of opening one each, which would exhaust the process's file descriptors.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_POOL_WAIT,
        socket_connect_timeout=1.0,
        socket_timeout=3.0,
    )
    client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it too
    kwargs = pool.connection_kwargs
    where = f"redis at {kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
    redis_clock = RedisClock(client) if clock is None else None
    used_clock: Clock = redis_clock if redis_clock is not None else clock  # type: ignore[assignment]
    store = RedisStore(client, used_clock)
    broker = RedisBroker(client, used_clock)

    async def start() -> None:
        attempt = 0
        while True:
            try:
                await store.ping()
                if redis_clock is not None:
                    await redis_clock.sync()
                if attempt:
                    log.info("%s answers: serving", where)
                return
            except (ConnectionError, TimeoutError, OSError) as exc:
                delay = STARTUP_RETRY_DELAYS[min(attempt, len(STARTUP_RETRY_DELAYS) - 1)]
                log.warning("waiting for %s (%s): retrying in %.1f s", where, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def close() -> None:
        await broker.close()
        await client.aclose()

    background = [redis_clock.run] if redis_clock is not None else []
    return Backend(store, broker, used_clock, start, close, background, redis=client)


def build_backend(backend: str, redis_url: str, clock: Clock | None = None) -> Backend:
    if backend == "redis":
        return redis_backend(redis_url, clock)
    return memory_backend(clock)
