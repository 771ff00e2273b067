"""Scenario 4, idle: 10k then 19k sockets that joined rooms of 20 and only answer pings.
Server RSS per socket (VmRSS after − before, over the sockets) and the server CPU the pings
cost, with a short ping interval so that a few seconds hold several rounds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bench.common import cpu_times, rss_bytes
from bench.loadgen.idle import IdleFleet
from bench.servers import LIVESIGNAL, NODE, Candidate, make_rooms

FULL = (10_000, 19_000)
QUICK = (500, 1_000)
ROOM_SIZE = 20
PING_INTERVAL = 2.0  # seconds; livesignal closes a socket silent for 3 of them
WINDOW = 6.0  # seconds of pings measured at each step: three rounds
SETTLE = 1.5  # seconds after the sockets opened before RSS is read


@dataclass
class IdleRow:
    server: str
    family: str
    sockets: int = 0
    rss_before: int = 0
    rss_after: int = 0
    ping_us: float | None = None  # server CPU per ping answered
    pings_per_second: float = 0.0
    cpu_share: float = 0.0  # of one core, over the window
    note: str = ""

    @property
    def kib_per_socket(self) -> float | None:
        if not self.sockets or not self.rss_after:
            return None
        return (self.rss_after - self.rss_before) / self.sockets / 1024


@dataclass
class IdleResult:
    steps: tuple[int, ...]
    rows: list[IdleRow] = field(default_factory=list)


def idle_candidates(candidates: list[Candidate]) -> list[Candidate]:
    """livesignal with its defaults and Node socket.io; python-socketio would take minutes
    to connect 19k sockets (it is in the other scenarios)."""
    chosen, seen = [], set()
    for candidate in candidates:
        if candidate.family in (LIVESIGNAL, NODE) and candidate.family not in seen:
            chosen.append(candidate)
            seen.add(candidate.family)
    return chosen


async def run(candidates: list[Candidate], quick: bool) -> IdleResult:
    result = IdleResult(QUICK if quick else FULL)
    for candidate in idle_candidates(candidates):
        if candidate.skip:
            result.rows.append(IdleRow(candidate.label, candidate.family, note=candidate.skip))
            continue
        try:
            result.rows += await measure(candidate, result.steps)
        except Exception as error:  # one server failing does not end the run
            print(f"   {candidate.label} failed: {error!r}", flush=True)
            note = f"failed: {error!r}"[:200]
            result.rows.append(IdleRow(candidate.label, candidate.family, note=note))
    return result


async def measure(candidate: Candidate, steps: tuple[int, ...]) -> list[IdleRow]:
    rows = []
    most = steps[-1]
    with candidate.start(ping_interval=PING_INTERVAL) as target:
        rooms = await make_rooms(target, -(-most // ROOM_SIZE), ROOM_SIZE, "idle")
        members = [(f"{room.id}-s{j}", room.id) for room in rooms for j in range(ROOM_SIZE)]
        await asyncio.sleep(SETTLE)
        before = rss_bytes(target.pid)
        with IdleFleet(target.dialect, target.port, most) as fleet:
            opened = 0
            for step in steps:
                print(f"-- {target.label}: {step:,} idle sockets", flush=True)
                await fleet.grow(members[opened:step])
                opened = step
                await asyncio.sleep(SETTLE)
                row = IdleRow(target.label, target.family, step, before, rss_bytes(target.pid))
                stats0, cpu0 = await fleet.stats(), sum(cpu_times(target.pid))
                await asyncio.sleep(WINDOW)
                stats1, cpu1 = await fleet.stats(), sum(cpu_times(target.pid))
                pongs = stats1["pongs"] - stats0["pongs"]
                row.cpu_share = (cpu1 - cpu0) / WINDOW
                row.pings_per_second = pongs / WINDOW
                row.ping_us = (cpu1 - cpu0) / pongs * 1e6 if pongs else None
                if stats1["lost"]:
                    row.note = f"{stats1['lost']} sockets closed by the server"
                print(f"   {line(row)}", flush=True)
                rows.append(row)
    return rows


def line(row: IdleRow) -> str:
    kib = row.kib_per_socket
    return (
        f"RSS {row.rss_before / 2**20:.0f} -> {row.rss_after / 2**20:.0f} MiB = "
        f"{kib:.1f} KiB/socket; pings {row.pings_per_second:,.0f}/s cost "
        f"{row.cpu_share:.1%} of a core ({row.ping_us or 0:.1f} us each) {row.note}"
    )


def markdown(result: IdleResult) -> str:
    lines = [
        "## 4. Idle sockets: memory and pings",
        "",
        f"Sockets join rooms of {ROOM_SIZE} (livesignal: room.join into rooms started over "
        "REST; socket.io: a socket.io room), then only answer pings. RSS per socket = (VmRSS "
        "with the sockets open − VmRSS before the first one, rooms already made) / sockets. "
        f"The ping interval is {PING_INTERVAL:g} s for this scenario (livesignal `[presence] "
        f"heartbeat_interval`, Engine.IO `pingInterval`); the ping cost is the server's CPU "
        f"over {WINDOW:g} s divided by the pongs its clients sent, and the share of a core it "
        "would take at livesignal's default interval of 5 s is that cost × sockets / 5. "
        "python-socketio is left out here: connecting 19k sockets to it takes minutes.",
        "",
        "| server | sockets | RSS before → after | KiB per socket | pings/s | CPU per ping "
        "| share of a core | at a 5 s interval | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result.rows:
        kib = row.kib_per_socket
        if kib is None:
            lines.append(f"| {row.server} | – | – | – | – | – | – | – | {row.note} |")
            continue
        ping = f"{row.ping_us:.1f} µs" if row.ping_us is not None else "n/a"
        at_default = (row.ping_us or 0) * row.sockets / 5.0 / 1e6
        lines.append(
            f"| {row.server} | {row.sockets:,} | {row.rss_before / 2**20:.0f} → "
            f"{row.rss_after / 2**20:.0f} MiB | **{kib:.1f}** | {row.pings_per_second:,.0f} | "
            f"{ping} | {row.cpu_share:.1%} | {at_default:.1%} | {row.note} |"
        )
    return "\n".join(lines)
