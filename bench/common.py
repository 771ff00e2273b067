"""Shared bench plumbing: start `livesignal serve` on a free loopback port, read its CPU time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
        with open(f"/proc/{self.process.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


# A sender chatting at the bench's rate is the load, not an attack: the per-user rates of
# PROTOCOL §7 are turned off. (A delivery passes no limit check either way.)
BENCH_LIMITS = (
    "[limits]\nchat_per_second = 0\nrequests_per_second = 0\nrelay_starts_per_minute = 0\n"
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


@contextmanager
def running_server(extra_toml: str = "") -> Iterator[Server]:
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
        config.write(f'[auth]\njwt_secret = "{BENCH_SECRET}"\n{BENCH_LIMITS}{extra_toml}')
    process = subprocess.Popen(
        [sys.executable, "-m", "livesignal", "serve", "--config", config.name, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield Server(process, port)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        os.unlink(config.name)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
