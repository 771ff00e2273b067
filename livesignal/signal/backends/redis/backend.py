"""The Redis backend: store, broker and clock shared by every node (PROTOCOL §5).

Start-up waits for Redis, retrying with a log line, rather than failing.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from livesignal.signal.backends.base import Backend
from livesignal.signal.backends.redis import keys
from livesignal.signal.backends.redis.broker import RedisBroker
from livesignal.signal.backends.redis.clock import RedisClock
from livesignal.signal.backends.redis.store import RedisStore
from livesignal.signal.model.clock import Clock

log = logging.getLogger(__name__)

STARTUP_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
REDIS_CONNECTIONS = 64  # per process; pub/sub has its own
REDIS_POOL_WAIT = 5.0  # seconds a step waits for a free connection before answering 503


def redis_backend(url: str, clock: Clock | None = None) -> Backend:
    """A Redis backend; with `clock` None, time is Redis' own (redis/clock.py)."""
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

    async def share_secret(name: str, value: str) -> str:
        """The cluster's value of an empty secret: the first node's random one (SET NX)."""
        await client.set(keys.secret(name), value, nx=True)
        shared = await client.get(keys.secret(name))
        return keys.text(shared) if shared is not None else value

    background = [redis_clock.run] if redis_clock is not None else []
    return Backend(store, broker, used_clock, start, close, background, share_secret, redis=client)
