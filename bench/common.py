"""Shared bench plumbing: start servers on free loopback ports and end them by PID; read a
process's CPU time and RSS from /proc; issue tokens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH_SECRET = "bench-secret-0123456789abcdef-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def cpu_seconds(self) -> float:
        """user + system CPU time of the server process, from /proc."""
        return sum(cpu_times(self.process.pid))


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of one process, all its threads, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    """The PIDs of a process's children (a supervisor's workers), from /proc."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
    except OSError:
        pass
    return found


def token(user: str, role: str = "") -> str:
    """A livesignal token for `user`, signed with the bench's secret."""
    from livesignal.signal.model.auth import TokenCodec

    return TokenCodec(BENCH_SECRET, 86400).issue(user, time.time(), role=role)[0]


# A sender chatting at the bench's rate is the load, not an attack: the per-user rates of
# PROTOCOL §7 are turned off. (A delivery passes no limit check either way.)
BENCH_LIMITS = (
    "[limits]\nchat_per_second = 0\nrequests_per_second = 0\nrelay_starts_per_minute = 0\n"
    "open_rooms_per_user = 0\nsockets_per_user = 0\n"
)


def wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float = 15.0) -> None:
    """Return once something accepts on 127.0.0.1:port; RuntimeError if `process` dies or
    the deadline passes first."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{process.args} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process the bench started, and any children it left, by PID: SIGTERM, then
    SIGKILL after 10 s."""
    left = children(process.pid)
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in left:
        try:
            os.kill(pid, 9)
        except OSError:
            pass  # already gone, as it should be


@contextmanager
def running_process(
    argv: Sequence[str], port: int, cwd: Path | None = None, deadline: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server that will listen on 127.0.0.1:port; end it by PID on the way out."""
    process = subprocess.Popen(
        list(argv), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process, deadline)
        yield process
    finally:
        stop(process)


@contextmanager
def running_server(extra_toml: str = "", args: Sequence[str] = ()) -> Iterator[Server]:
    """`livesignal serve` with the bench's secret, the limits off, and `extra_toml`."""
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
        config.write(f'[auth]\njwt_secret = "{BENCH_SECRET}"\n{BENCH_LIMITS}{extra_toml}')
    argv = [sys.executable, "-m", "livesignal", "serve", "--config", config.name]
    try:
        with running_process([*argv, "--port", str(port), *args], port) as process:
            yield Server(process, port)
    finally:
        os.unlink(config.name)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
