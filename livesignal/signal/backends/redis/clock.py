"""Time as Redis tells it, so that a deadline one node writes means the same to every other.

Each node measures the offset between its wall clock and Redis' TIME (halving the round trip)
at start-up and every RESYNC seconds; `now()` is local time plus that offset: no I/O, so the
clock costs nothing on the hot paths. Nodes then agree to within a round trip or so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livesignal.signal.model.clock import Timer

log = logging.getLogger(__name__)

RESYNC = 30.0


class RedisClock:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)

    async def sync(self) -> None:
        before = time.time()
        seconds, micros = await self._redis.time()
        after = time.time()
        self.offset = seconds + micros / 1e6 - (before + after) / 2

    async def run(self) -> None:
        """Resync every RESYNC seconds until cancelled; a failed resync keeps the offset."""
        while True:
            await asyncio.sleep(RESYNC)
            try:
                await self.sync()
            except (RedisError, OSError) as exc:
                log.warning("could not read the time from redis: %s", exc)
