"""Scenario 2, latency: one room of 1000 sockets at 20 messages/s, a rate the client
processes keep up with: delivery latency p50/p99 per server, and the delay livesignal adds
(its GET /metrics fan-out histogram)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.scenarios.chat import ChatRow, measure, skipped, table
from bench.servers import Candidate

FULL = (1000, 100, 20.0)  # sockets, messages, messages per second
QUICK = (200, 40, 20.0)


@dataclass
class LatencyResult:
    size: tuple[int, int, float]
    rows: list[ChatRow] = field(default_factory=list)


async def run(candidates: list[Candidate], quick: bool) -> LatencyResult:
    result = LatencyResult(QUICK if quick else FULL)
    sockets, messages, rate = result.size
    for candidate in candidates:
        if candidate.skip:
            result.rows.append(skipped(candidate, f"skipped: {candidate.skip}"))
            continue
        try:
            with candidate.start() as target:
                result.rows.append(await measure(target, 1, sockets, messages, rate, admin=True))
        except Exception as error:  # one server failing does not end the run
            print(f"   {candidate.label} failed: {error!r}", flush=True)
            result.rows.append(skipped(candidate, f"failed: {error!r}"[:200]))
    return result


def markdown(result: LatencyResult) -> str:
    sockets, messages, rate = result.size
    return "\n".join(
        [
            f"## 2. Latency: {sockets:,} sockets × {rate:g} events/s",
            "",
            f"One room of {sockets:,} sockets, {messages} messages at {rate:g}/s. Delivery "
            "latency: the sender's send time (in the message) → the receiving process's read, "
            "from every 10th socket, every message (sender and receivers share the machine's "
            "monotonic clock). Server delay: livesignal's `GET /metrics` fan-out histogram.",
            "",
            table(result.rows, sizes=False),
        ]
    )
