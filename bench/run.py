"""Every bench scenario, livesignal against python-socketio and Node socket.io, in one run.

    python bench/run.py            # the full run: bench/RESULTS.md and bench/charts/*.png
    python bench/run.py --quick    # a smoke run with small sizes, written to a temp folder

Scenarios (bench/scenarios/): 1. fan-out (one room of 100, 1000, 5000 sockets), 2. latency
(1000 sockets x 20 events/s), 3. many rooms (500 x 20), 4. idle (10k and 19k sockets),
5. REST heartbeats, `--workers 2`, invitation latency. Node socket.io needs `npm install
--prefix bench/compare/node` (skipped with a line saying so otherwise); Redis scenarios need
redis-server. Every server is ended by PID on the way out, also on errors and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import charts, report  # noqa: E402
from bench.scenarios import fanout, idle, latency, rest, rooms  # noqa: E402
from bench.servers import LIVESIGNAL, candidates  # noqa: E402

SCENARIOS = ("fanout", "latency", "rooms", "idle", "rest")
HARD_LIMIT = 1200  # seconds: the run is ended (servers stopped) past this


def raise_fd_limit() -> None:
    """Up to the hard limit of open files (19k idle sockets); child processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def busy_share(seconds: float = 1.0) -> float:
    """The share of all CPUs busy over `seconds`, from /proc/stat (before the bench starts
    anything: what other processes take from the run)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def on_signal(number: int, _: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {number}")  # unwinds: every server is ended


async def run_all(only: list[str], quick: bool) -> report.Results:
    found = candidates()
    for candidate in found:
        if candidate.skip:
            print(f"-- {candidate.label}: skipped, {candidate.skip}", flush=True)
    results = report.Results(failures={})
    steps = {
        "fanout": lambda: fanout.run(found, quick),
        "latency": lambda: latency.run(found, quick),
        "rooms": lambda: rooms.run(found, quick),
        "idle": lambda: idle.run(found, quick),
        "rest": lambda: rest.run(quick),
    }
    for name in only:
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        try:
            setattr(results, name, await steps[name]())
        except Exception as error:  # the report still gets written
            print(f"== {name} failed: {error!r}", flush=True)
            assert results.failures is not None
            results.failures[name] = repr(error)
        print(f"== {name}: {time.monotonic() - started:.0f} s", flush=True)
    return results


def livesignal_labels() -> dict[str, str]:
    ours = [c for c in candidates() if c.family == LIVESIGNAL]
    labels = {"default": ours[0].label}
    labels["flush0"] = ours[1].label if len(ours) > 1 else ours[0].label
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for RESULTS.md and charts/ (default: bench/, or a temp folder with --quick)",
    )
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="livesignal-bench-")) if args.quick else ROOT / "bench"
    )
    raise_fd_limit()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(HARD_LIMIT)
    background = busy_share()
    if background > 0.1:
        print(f"warning: the machine is {background:.0%} busy before the run: figures will be off")
    started = time.monotonic()
    results = asyncio.run(run_all(only, args.quick))
    signal.alarm(0)
    seconds = time.monotonic() - started
    found = report.checks(results, livesignal_labels(), seconds)
    drawn = charts.draw(results, out / "charts")
    command = "python bench/run.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.md").write_text(
        report.document(results, found, drawn, command, seconds, background)
    )
    print(f"\n{report.summary_table(found)}\n")
    print(f"run took {seconds:.0f} s ({seconds / 60:.1f} min); wrote {out / 'RESULTS.md'}")
    if args.quick or args.only != ",".join(SCENARIOS):
        print("(a partial or --quick run: sizes or scenarios differ from the targets')")


if __name__ == "__main__":
    main()
