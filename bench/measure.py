"""What the bench reads from a server around a load: its CPU time (user and kernel apart,
from /proc) and, for livesignal, the fan-out delay histogram of GET /metrics (Prometheus
text format), from which the delay the server adds is computed as a bucket difference.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass

import aiohttp

from bench.common import cpu_times
from bench.loadgen.chat import Meter
from bench.servers import LIVESIGNAL, Target

DELAY = "livesignal_fanout_delay_seconds"
BUCKET = re.compile(r'^(\w+)_bucket\{(?:[^}]*,)?le="([^"]+)"(?:,[^}]*)?\}\s+(\S+)', re.M)


@dataclass(frozen=True)
class Histogram:
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending
    count: float


def parse_histogram(text: str, name: str) -> Histogram | None:
    """The histogram `name` in Prometheus text, or None when it is not there."""
    buckets = [
        (math.inf if le == "+Inf" else float(le), float(value))
        for metric, le, value in BUCKET.findall(text)
        if metric == name
    ]
    found = re.search(rf"^{name}_count\s+(\S+)", text, re.M)
    if not buckets or found is None:
        return None
    return Histogram(tuple(sorted(buckets)), float(found.group(1)))


def quantile(before: Histogram, after: Histogram, fraction: float) -> float | None:
    """The upper bound of the bucket where the observations made between the two scrapes
    reach `fraction` cumulatively; None without observations."""
    total = after.count - before.count
    if total <= 0:
        return None
    previous = dict(before.buckets)
    for bound, cumulative in after.buckets:
        if cumulative - previous.get(bound, 0.0) >= fraction * total:
            return bound
    return math.inf


async def scrape(target: Target) -> Histogram | None:
    """livesignal's fan-out delay histogram; None for other servers or without /metrics."""
    if target.family != LIVESIGNAL:
        return None
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(f"{target.http}/metrics") as response:
                if response.status != 200:
                    return None
                return parse_histogram(await response.text(), DELAY)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


class ServerMeter(Meter):
    """The server's CPU over the sending phase and, where it has them, its fan-out delays."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.user = self.kernel = 0.0
        self.delay_p50: float | None = None
        self.delay_p99: float | None = None
        self.delay_count = 0.0
        self._cpu = (0.0, 0.0)
        self._before: Histogram | None = None

    async def begin(self) -> None:
        self._before = await scrape(self.target)
        self._cpu = cpu_times(self.target.pid)

    async def end(self) -> None:
        user, kernel = cpu_times(self.target.pid)
        self.user, self.kernel = user - self._cpu[0], kernel - self._cpu[1]
        after = await scrape(self.target)
        if self._before is not None and after is not None:
            self.delay_p50 = quantile(self._before, after, 0.5)
            self.delay_p99 = quantile(self._before, after, 0.99)
            self.delay_count = after.count - self._before.count


async def quiet(pid: int, share: float = 0.05, window: float = 0.3, most: float = 15.0) -> None:
    """Wait until the process uses under `share` of a core over `window` (at most `most` s):
    what set-up left it doing (join events, say) must not count as load."""
    give_up = time.monotonic() + most
    while time.monotonic() < give_up:
        before = sum(cpu_times(pid))
        await asyncio.sleep(window)
        if sum(cpu_times(pid)) - before <= share * window:
            return
