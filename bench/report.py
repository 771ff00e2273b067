"""bench/RESULTS.md: the targets of issue 10 against what this run measured, then every
scenario's table, the charts, and the machine, software, date and commit."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.scenarios import fanout, idle, latency, rest, rooms
from bench.scenarios.chat import ChatRow, find
from bench.servers import LIVESIGNAL, NODE, PYTHON_SOCKETIO

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Results:
    fanout: fanout.FanoutResult | None = None
    latency: latency.LatencyResult | None = None
    rooms: rooms.RoomsResult | None = None
    idle: idle.IdleResult | None = None
    rest: rest.RestResult | None = None
    failures: dict[str, str] | None = None


@dataclass
class Check:
    what: str
    target: str
    value: str
    verdict: str  # "pass", "FAIL" or "n/a"
    margin: str


def at_most(what: str, limit: float, value: float | None, unit: str, target: str = "") -> Check:
    if value is None:
        return Check(what, target or f"≤ {limit:g} {unit}", "n/a", "n/a", "not measured")
    ok = value <= limit
    gap = abs(limit - value)
    share = gap / limit if limit else 0.0
    margin = f"{gap:.2f} {unit} {'under' if ok else 'over'} ({share:.0%})"
    return Check(what, target or f"≤ {limit:g} {unit}", f"{value:.2f} {unit}", verdict(ok), margin)


def at_least(what: str, limit: float, value: float | None, unit: str, fmt: str = ".2f") -> Check:
    if value is None:
        return Check(what, f"≥ {limit:{fmt}} {unit}", "n/a", "n/a", "not measured")
    ok = value >= limit
    gap = abs(value - limit)
    margin = f"{gap:{fmt}} {unit} {'above' if ok else 'short'} ({gap / limit:.0%})"
    return Check(what, f"≥ {limit:{fmt}} {unit}", f"{value:{fmt}} {unit}", verdict(ok), margin)


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def by_family(rows: list[ChatRow], family: str, sockets: int | None = None) -> ChatRow | None:
    for row in rows:
        if row.family == family and row.measured and sockets in (None, row.sockets):
            return row
    return None


def checks(results: Results, labels: dict[str, str], seconds: float) -> list[Check]:
    """labels: "default" and "flush0" → the livesignal candidates' labels."""
    found: list[Check] = []
    if results.fanout is not None:
        n = results.fanout.sizes[1][0]
        rows = results.fanout.rows
        ours = find(rows, labels["default"], n)
        flush0 = find(rows, labels.get("flush0", ""), n)
        node = by_family(rows, NODE, n)
        pysio = by_family(rows, PYTHON_SOCKETIO, n)
        where = f"N = {n:,}, {results.fanout.sizes[1][2]:g}/s"
        cpu = ours.cpu_us if ours else None
        found.append(at_most(f"livesignal CPU per delivery, defaults ({where})", 6.7, cpu, "µs"))
        ratio_node = node.cpu_us / cpu if node and cpu else None
        found.append(at_least("… vs Node socket.io (CPU per delivery ratio)", 2.0, ratio_node, "×"))
        ratio_py = pysio.cpu_us / cpu if pysio and cpu else None
        found.append(at_least("… vs python-socketio (CPU per delivery ratio)", 10.0, ratio_py, "×"))
        delay = ours.delay_p99_ms if ours else None
        found.append(at_most(f"server-added delay p99, /metrics ({where})", 25, delay, "ms"))
        found.append(
            at_most(
                f"livesignal flush_interval = 0: CPU per delivery ≤ Node socket.io's ({where})",
                node.cpu_us if node else float("nan"),
                flush0.cpu_us if flush0 and node else None,
                "µs",
                target=f"≤ Node's {node.cpu_us:.2f} µs" if node else "≤ Node's",
            )
        )
    if results.latency is not None:
        n, _, rate = results.latency.size
        ours = find(results.latency.rows, labels["default"])
        where = f"{n:,} sockets × {rate:g}/s"
        delay = ours.delay_p99_ms if ours else None
        found.append(at_most(f"server-added delay p99, /metrics ({where})", 25, delay, "ms"))
        p99 = ours.p99_ms if ours else None
        found.append(at_most(f"delivery latency p99 ({where})", 50, p99, "ms"))
    if results.idle is not None:
        ours = [r for r in results.idle.rows if r.family == LIVESIGNAL and r.kib_per_socket]
        last = ours[-1] if ours else None
        what = f"RSS per idle socket at {last.sockets:,} sockets" if last else "RSS per idle socket"
        found.append(at_most(what, 16, last.kib_per_socket if last else None, "KiB"))
    if results.rest is not None:
        row = results.rest.one_process()
        value = row.per_second if row else None
        found.append(at_least("REST heartbeats/s, one process", 10_000, value, "/s", ",.0f"))
    found.append(at_most("the whole run (one command)", 600, seconds, "s", target="< 10 min"))
    return found


def summary_table(found: list[Check]) -> str:
    lines = ["| target (issue 10) | goal | measured | verdict | margin |", "|---|---|---|---|---|"]
    for check in found:
        lines.append(
            f"| {check.what} | {check.target} | {check.value} | **{check.verdict}** | "
            f"{check.margin} |"
        )
    return "\n".join(lines)


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, nproc {len(os.sched_getaffinity(0))} ({os.cpu_count()} CPUs)"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "livesignal")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"`{head}`" + (" with uncommitted changes under livesignal/" if dirty else "")


def document(
    results: Results,
    found: list[Check],
    charts: list[Path],
    command: str,
    seconds: float,
    background: float,
) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# livesignal against python-socketio and Node socket.io",
        "",
        f"Generated by `{command}` in {seconds / 60:.1f} min ({now}). Servers run one at a time, "
        "each with the same load generator (raw WebSocket/HTTP clients in their own "
        "processes, loopback only); server CPU is the server process's utime + stime from "
        "/proc, user and kernel apart. Single runs on 2 shared cores are noisy (±10–20 %), and "
        "CPU time is counted in 10 ms ticks.",
        "",
        f"CPUs busy before the run started (other processes): {background:.0%}."
        + (" **The figures are disturbed by that load.**" if background > 0.1 else ""),
        "",
        "## Summary",
        "",
        summary_table(found),
        "",
    ]
    sections = [
        (results.fanout, fanout.markdown),
        (results.latency, latency.markdown),
        (results.rooms, rooms.markdown),
        (results.idle, idle.markdown),
        (results.rest, rest.markdown),
    ]
    for result, render in sections:
        if result is not None:
            parts += [render(result), ""]  # type: ignore[operator]
    for name, error in (results.failures or {}).items():
        parts += [f"## {name}: failed", "", f"`{error}`", ""]
    if charts:
        parts += ["## Charts", ""]
        parts += [f"![{path.stem}](charts/{path.name})" for path in charts]
        parts.append("")
    parts += [
        "## Machine",
        "",
        f"- CPU: {machine()}",
        f"- Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"- Date: {now}",
        f"- Commit: {commit()}",
        "",
    ]
    return "\n".join(parts)
