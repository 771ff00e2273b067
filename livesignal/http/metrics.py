"""GET /metrics: this process's socket and fan-out figures in Prometheus' text format.

Unauthenticated and outside the REST envelope, like the health probes: it names no user, room
or token, only counts. With `--workers N` each request reaches one worker, which answers for
itself (scrape every worker's node listener, or run one worker per port, to see them all).

The figures are kept in plain Python numbers updated once per fan-out write batch, never per
socket, so that measuring costs nothing a delivery would notice.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from aiohttp import web

METRICS_PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds from an event reaching this node's fan-out to its frame being written: the delay the
# server adds. The bounds bracket `[ws] flush_interval`'s useful range finely.
DELAY_BOUNDS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class Histogram:
    """A cumulative histogram over fixed bounds; an observation may stand for many."""

    __slots__ = ("name", "help", "bounds", "counts", "total", "count")

    def __init__(self, name: str, help_text: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.help = help_text
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += times
        self.total += value * times
        self.count += times

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip((*self.bounds, None), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound is None else repr(bound)
            lines.append(f'{self.name}_bucket{{le="{le}"}} {cumulative}')
        lines.append(f"{self.name}_sum {self.total!r}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class FanoutMetrics:
    """What the socket hub counts as it delivers."""

    def __init__(self) -> None:
        self.delay = Histogram(
            "livesignal_fanout_delay_seconds",
            "Delay from a room event reaching this node's fan-out to its frame being written, "
            "one observation per socket it was written to.",
            DELAY_BOUNDS,
        )
        self.frames = 0  # room event frames written to sockets
        self.writes = 0  # transport writes that carried them (coalescing makes this smaller)

    def delivered(self, delays: list[float], sockets: int, frames: int) -> None:
        """Frames that waited `delays` went out to `sockets` sockets, `frames` in all, one
        write per socket (a socket that had some of them already gets the rest one by one,
        a rare case counted as one write)."""
        for delay in delays:
            self.delay.observe(delay, sockets)
        self.frames += frames
        self.writes += sockets


Values = dict[str, tuple[str, float]]  # metric name -> (help, value)


def _plain(kind: str, values: Values) -> list[str]:
    lines: list[str] = []
    for name, (help_text, value) in values.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return lines


def render(metrics: FanoutMetrics, gauges: Values) -> str:
    counters: Values = {
        "livesignal_room_event_frames_total": (
            "Room event frames written to sockets.",
            metrics.frames,
        ),
        "livesignal_room_event_writes_total": (
            "Socket writes that carried room event frames (coalescing makes this smaller).",
            metrics.writes,
        ),
    }
    lines = _plain("gauge", gauges) + _plain("counter", counters) + metrics.delay.render()
    return "\n".join(lines) + "\n"


def add_metrics_route(
    app: web.Application,
    metrics: FanoutMetrics,
    gauges: Callable[[], Values],
) -> None:
    """GET /metrics from `metrics` and the current values `gauges()` gives (name → help, v)."""

    async def _metrics(request: web.Request) -> web.Response:
        return web.Response(
            text=render(metrics, gauges()),
            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
        )

    app.router.add_get(METRICS_PATH, _metrics)
