"""Time as the server sees it: injectable, so that every timer is tested without sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol

# The original server formats and parses wall times in China Standard Time.
CHINA_TZ = timezone(timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class Timer(Protocol):
    """A callback scheduled on a clock; `cancel()` before it runs and it never does."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Tells the time, waits for it and schedules on it: every timer (pings, heartbeat
    timeouts, token expiry, sweeps, write coalescing, close grace) runs on a clock, so a
    manual clock drives them all without real waiting."""

    def now(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` (on the event loop) once `delay` seconds have passed."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class MonotonicClock(SystemClock):
    """The event loop's monotonic time: for intervals on this node only (write coalescing,
    the close grace), never stored or compared across nodes, so that a step of the wall
    clock (NTP) neither holds events back nor cuts a close short. `now()` is seconds from an
    arbitrary origin, not unix time."""

    def now(self) -> float:
        return time.monotonic()  # what asyncio's loop.time() and call_later run on


class _ManualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to: for tests and simulations. `advance` runs the
    callbacks that fall due, in time order (each seeing the clock at its own time), and
    wakes the sleepers whose time has come."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), woken))
        await woken

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer(callback)
        heapq.heappush(self._timers, (self._now + max(0.0, delay), next(self._order), timer))
        return timer

    def pending(self) -> int:
        """Callbacks scheduled and not yet run or cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        timers = self._timers
        while timers and timers[0][0] <= target:
            when, _, timer = heapq.heappop(timers)
            if not timer.cancelled:
                self._now = max(self._now, when)
                timer.cancelled = True  # ran: cancelling it now is a no-op
                timer.callback()
        self._now = target
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
