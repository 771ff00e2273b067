"""One chat measurement against one running server, as a table row: the part the fan-out,
latency and many-rooms scenarios share."""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import percentile
from bench.loadgen.chat import ChatPlan, run_chat
from bench.measure import ServerMeter, quiet
from bench.servers import Candidate, Target, make_rooms


@dataclass
class ChatRow:
    server: str
    family: str
    sockets: int = 0
    rooms: int = 0
    messages: int = 0  # per room
    rate: float = 0.0  # per room per second
    user_us: float = 0.0
    kernel_us: float = 0.0
    per_second: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    delay_p50_ms: float | None = None  # livesignal's own: fan-out to frame written
    delay_p99_ms: float | None = None
    delivered: int = 0
    expected: int = 0
    note: str = ""

    @property
    def cpu_us(self) -> float:
        return self.user_us + self.kernel_us

    @property
    def measured(self) -> bool:
        return self.delivered > 0


def find(rows: list[ChatRow], server: str, sockets: int | None = None) -> ChatRow | None:
    """The measured row of that server (at that size), if any."""
    for row in rows:
        if row.server == server and row.measured and sockets in (None, row.sockets):
            return row
    return None


def skipped(candidate: Candidate, note: str) -> ChatRow:
    return ChatRow(candidate.label, candidate.family, note=note)


async def measure(
    target: Target, rooms: int, sockets: int, messages: int, rate: float, *, admin: bool
) -> ChatRow:
    """`rooms` rooms of `sockets` sockets; each room's sender sends `messages` at `rate`/s."""
    row = ChatRow(target.label, target.family, sockets * rooms, rooms, messages, rate)
    print(
        f"-- {target.label}: {rooms} room(s) x {sockets} sockets, {messages} messages "
        f"at {rate:g}/s per room",
        flush=True,
    )
    made = await make_rooms(target, rooms, sockets, f"r{sockets}x{rooms}-")
    plan = ChatPlan(target.dialect, target.port, made, messages, rate, admin_receivers=admin)
    meter = ServerMeter(target)
    stats = await run_chat(plan, meter, settle=lambda: quiet(target.pid))
    row.delivered, row.expected = stats.delivered, stats.expected
    if stats.delivered:
        row.user_us = meter.user / stats.delivered * 1e6
        row.kernel_us = meter.kernel / stats.delivered * 1e6
        row.per_second = stats.delivered / max(1e-6, stats.last_receive - stats.first_send)
    if stats.latencies:
        row.p50_ms = percentile(stats.latencies, 0.5) * 1000
        row.p99_ms = percentile(stats.latencies, 0.99) * 1000
    if meter.delay_p50 is not None and meter.delay_p99 is not None:
        row.delay_p50_ms, row.delay_p99_ms = meter.delay_p50 * 1000, meter.delay_p99 * 1000
    if stats.delivered < stats.expected:
        row.note = (
            f"{stats.expected - stats.delivered:,} deliveries missing "
            f"({stats.short_sockets} sockets short, {stats.lost_sockets} closed)"
        )
    print(f"   {line(row)}", flush=True)
    return row


def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "> 1 s" if value == float("inf") else f"{value:.1f}"


def line(row: ChatRow) -> str:
    return (
        f"{row.delivered:,}/{row.expected:,} delivered, CPU {row.user_us:.2f}+"
        f"{row.kernel_us:.2f} us/delivery, {row.per_second:,.0f}/s, latency p50 "
        f"{ms(row.p50_ms)} p99 {ms(row.p99_ms)} ms, server delay p50 {ms(row.delay_p50_ms)} "
        f"p99 {ms(row.delay_p99_ms)} ms {row.note}"
    )


def table(rows: list[ChatRow], *, sizes: bool = True, delay: bool = True) -> str:
    head = ["server"] + (["sockets"] if sizes else [])
    head += ["µs CPU/delivery (user + kernel)", "deliveries/s", "latency p50 / p99 ms"]
    head += ["server delay p50 / p99 ms"] if delay else []
    head += ["delivered", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.server] + ([f"{row.sockets:,}"] if sizes else [])
        if row.measured:
            cells += [
                f"**{row.cpu_us:.2f}** ({row.user_us:.2f} + {row.kernel_us:.2f})",
                f"{row.per_second:,.0f}",
                f"{ms(row.p50_ms)} / {ms(row.p99_ms)}",
            ]
            cells += [f"{ms(row.delay_p50_ms)} / {ms(row.delay_p99_ms)}"] if delay else []
            cells += [f"{row.delivered:,} / {row.expected:,}"]
        else:
            cells += ["–", "–", "–"] + (["–"] if delay else []) + ["–"]
        cells.append(row.note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
