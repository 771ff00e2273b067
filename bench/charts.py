"""PNG charts of a run (matplotlib, small files at 100 dpi) into bench/charts/."""

from __future__ import annotations

from pathlib import Path

from bench.report import Results
from bench.scenarios.chat import ChatRow

DPI = 100
SIZE = (7.0, 3.6)


def short(label: str) -> str:
    """'livesignal (defaults: flush_interval = 0.01)' -> 'livesignal\\n(defaults: …)'."""
    return label.replace(" (", "\n(", 1)


def draw(results: Results, folder: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: F401
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no charts")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name, painter in (
        ("fanout_cpu", _fanout_cpu),
        ("fanout_cpu_split", _fanout_split),
        ("latency", _latency),
        ("rooms", _rooms),
        ("idle_rss", _idle),
        ("rest", _rest),
    ):
        path = folder / f"{name}.png"
        if painter(results, path):
            drawn.append(path)
    return drawn


def _save(figure: object, path: Path) -> bool:
    import matplotlib.pyplot as plt

    figure.tight_layout()  # type: ignore[attr-defined]
    figure.savefig(path, dpi=DPI)  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    return True


def _servers(rows: list[ChatRow]) -> list[str]:
    seen: list[str] = []
    for row in rows:
        if row.measured and row.server not in seen:
            seen.append(row.server)
    return seen


def _fanout_cpu(results: Results, path: Path) -> bool:
    import matplotlib.pyplot as plt

    if results.fanout is None or not _servers(results.fanout.rows):
        return False
    figure, axes = plt.subplots(figsize=SIZE)
    for server in _servers(results.fanout.rows):
        points = [(r.sockets, r.cpu_us) for r in results.fanout.rows if r.server == server]
        points = [p for p in points if p[1] > 0]
        axes.plot(*zip(*points, strict=True), marker="o", label=server)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("sockets in the room (N)")
    axes.set_ylabel("server CPU µs per delivery")
    axes.set_title("Fan-out: server CPU per delivery")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    return _save(figure, path)


def _fanout_split(results: Results, path: Path) -> bool:
    import matplotlib.pyplot as plt

    if results.fanout is None:
        return False
    n = results.fanout.sizes[1][0]
    rows = [r for r in results.fanout.rows if r.sockets == n and r.measured]
    if not rows:
        return False
    figure, axes = plt.subplots(figsize=SIZE)
    names = [short(r.server) for r in rows]
    axes.bar(names, [r.user_us for r in rows], label="user")
    axes.bar(names, [r.kernel_us for r in rows], bottom=[r.user_us for r in rows], label="kernel")
    for index, row in enumerate(rows):
        axes.text(index, row.cpu_us, f"{row.cpu_us:.1f}", ha="center", va="bottom", fontsize=8)
    axes.set_ylabel("server CPU µs per delivery")
    axes.set_title(f"Fan-out at N = {n:,}: user and kernel CPU per delivery")
    axes.tick_params(axis="x", labelsize=7)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _latency(results: Results, path: Path) -> bool:
    import matplotlib.pyplot as plt

    if results.latency is None:
        return False
    rows = [r for r in results.latency.rows if r.measured and r.p50_ms is not None]
    if not rows:
        return False
    figure, axes = plt.subplots(figsize=SIZE)
    names = [short(r.server) for r in rows]
    positions = range(len(rows))
    axes.bar([p - 0.2 for p in positions], [r.p50_ms or 0 for r in rows], 0.4, label="p50")
    axes.bar([p + 0.2 for p in positions], [r.p99_ms or 0 for r in rows], 0.4, label="p99")
    axes.axhline(50, color="red", linestyle="--", linewidth=1, label="target p99 ≤ 50 ms")
    axes.set_xticks(list(positions), names, fontsize=7)
    axes.set_yscale("log")
    axes.set_ylabel("delivery latency, ms")
    sockets, _, rate = results.latency.size
    axes.set_title(f"Delivery latency, {sockets:,} sockets × {rate:g} events/s")
    axes.legend(fontsize=8)
    return _save(figure, path)


def _rooms(results: Results, path: Path) -> bool:
    import matplotlib.pyplot as plt

    if results.rooms is None:
        return False
    rows = [r for r in results.rooms.rows if r.measured]
    if not rows:
        return False
    figure, axes = plt.subplots(figsize=SIZE)
    names = [short(r.server) for r in rows]
    axes.bar(names, [r.cpu_us for r in rows])
    for index, row in enumerate(rows):
        label = f"{row.cpu_us:.1f} µs\np99 {row.p99_ms or 0:.0f} ms"
        axes.text(index, row.cpu_us, label, ha="center", va="bottom", fontsize=7)
    axes.set_ylabel("server CPU µs per delivery")
    count, size, _, _ = results.rooms.size
    axes.set_title(f"Many rooms ({count} × {size} sockets): CPU per delivery")
    axes.tick_params(axis="x", labelsize=7)
    axes.margins(y=0.2)
    return _save(figure, path)


def _idle(results: Results, path: Path) -> bool:
    import matplotlib.pyplot as plt

    if results.idle is None:
        return False
    rows = [r for r in results.idle.rows if r.kib_per_socket]
    if not rows:
        return False
    figure, axes = plt.subplots(figsize=SIZE)
    names = [f"{short(r.server)}\n{r.sockets:,} sockets" for r in rows]
    values = [r.kib_per_socket or 0 for r in rows]
    axes.bar(names, values)
    for index, value in enumerate(values):
        axes.text(index, value, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
    axes.axhline(16, color="red", linestyle="--", linewidth=1, label="livesignal target 16 KiB")
    axes.set_ylabel("server RSS KiB per idle socket")
    axes.set_title("Idle sockets: server memory per socket")
    axes.tick_params(axis="x", labelsize=7)
    axes.legend(fontsize=8)
    return _save(figure, path)


def _rest(results: Results, path: Path) -> bool:
    import matplotlib.pyplot as plt

    if results.rest is None:
        return False
    rows = [r for r in results.rest.heartbeats if r.per_second]
    if not rows:
        return False
    figure, axes = plt.subplots(figsize=SIZE)
    names = [r.setup.replace("`", "").replace(", ", "\n") for r in rows]
    axes.bar(names, [r.per_second for r in rows])
    for index, row in enumerate(rows):
        axes.text(index, row.per_second, f"{row.per_second:,.0f}", ha="center", va="bottom")
    axes.axhline(10_000, color="red", linestyle="--", linewidth=1, label="target 10k/s")
    axes.set_ylabel("heartbeats per second")
    axes.set_title("REST heartbeats per second")
    axes.tick_params(axis="x", labelsize=8)
    axes.legend(fontsize=8)
    return _save(figure, path)
