"""Time as the services see it: injectable so that timeouts are tested without sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol

# The original server formats and parses wall times in China Standard Time.
CHINA_TZ = timezone(timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class Clock(Protocol):
    """Tells the time and waits for it: every timer (pings, heartbeat timeouts, token expiry,
    sweeps) sleeps on its clock, so a fake clock drives them all without real waiting."""

    def now(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to: for tests and simulations. Its sleepers wake
    when `advance` moves it past their time, in order."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), woken))
        await woken

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, woken = heapq.heappop(self._sleepers)
            if not woken.done():
                woken.set_result(None)


def format_china_time(unix: float | None) -> str:
    """'YYYY-MM-DD HH:MM:SS' in UTC+8, or '' for no time."""
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, CHINA_TZ).strftime(TIME_FORMAT)


_TIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def parse_china_time(text: str) -> int:
    """Parse 'YYYY-MM-DD HH:MM:SS' (UTC+8) into unix seconds; ValueError if malformed."""
    if not _TIME_SHAPE.fullmatch(text):  # strptime alone would take "2021-12-2 1:1:1"
        raise ValueError(f"not YYYY-MM-DD HH:MM:SS: {text!r}")
    parsed = datetime.strptime(text, TIME_FORMAT).replace(tzinfo=CHINA_TZ)
    return int(parsed.timestamp())
