"""Scenario 1, fan-out: one room of N sockets, one of them sending chat messages at a fixed
rate; every socket receives every message. The headline is N = 1000 at 100 messages/s."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.scenarios.chat import ChatRow, measure, skipped, table
from bench.servers import Candidate

# (sockets, messages, messages per second): about 50k-200k deliveries, 2-3 s of sending each
FULL = [(100, 500, 200.0), (1000, 200, 100.0), (5000, 40, 20.0)]
QUICK = [(50, 100, 100.0), (200, 100, 100.0), (500, 40, 20.0)]
HEADLINE = 1000


@dataclass
class FanoutResult:
    sizes: list[tuple[int, int, float]]
    rows: list[ChatRow] = field(default_factory=list)


async def run(candidates: list[Candidate], quick: bool) -> FanoutResult:
    result = FanoutResult(QUICK if quick else FULL)
    for candidate in candidates:
        if candidate.skip:
            print(f"-- {candidate.label}: skipped, {candidate.skip}", flush=True)
            result.rows += [skipped(candidate, f"skipped: {candidate.skip}")]
            continue
        try:
            with candidate.start() as target:
                for sockets, messages, rate in result.sizes:
                    # livesignal receivers subscribe by an admin's room.start: N joins would
                    # first fan out N²/2 member.joined events (12.5M at N = 5000).
                    row = await measure(target, 1, sockets, messages, rate, admin=True)
                    result.rows.append(row)
        except Exception as error:  # one server failing does not end the run
            print(f"   {candidate.label} failed: {error!r}", flush=True)
            done = {r.sockets for r in result.rows if r.server == candidate.label}
            for sockets, messages, rate in result.sizes:
                if sockets not in done:
                    row = ChatRow(candidate.label, candidate.family, sockets, 1, messages, rate)
                    row.note = f"failed: {error!r}"[:200]
                    result.rows.append(row)
    return result


def markdown(result: FanoutResult) -> str:
    parts = ["## 1. Fan-out: one room of N sockets", ""]
    parts.append(
        "One room of N sockets; one of them sends M chat messages at R/s and every socket, the "
        "sender's included, must receive each (N × M deliveries). Server CPU is the server "
        "process's utime + stime over the sending phase, per delivery. Server delay is "
        "livesignal's own `livesignal_fanout_delay_seconds` histogram from `GET /metrics` "
        "(event reaching the node's fan-out → frame written; p50/p99 = the upper bound of the "
        "bucket where the share is reached), read before and after the sending phase."
    )
    for sockets, messages, rate in result.sizes:
        rows = [r for r in result.rows if r.sockets in (sockets, 0)]
        parts += [
            "",
            f"### N = {sockets:,}: {messages} messages at {rate:g}/s "
            f"({sockets * messages:,} deliveries)",
            "",
            table(rows, sizes=False),
        ]
    return "\n".join(parts)
