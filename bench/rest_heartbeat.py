"""Load on the hottest REST path: GET /client/live/room/heartbeat/{live_id}.

Starts ONE `livesignal serve` process on a free loopback port, creates and starts a room,
lets N users join it, then drives heartbeats for a fixed duration with bounded concurrency
(aiohttp client, keep-alive) and reports requests/s, p50/p99 latency and the server's CPU
seconds (from /proc/<pid>/stat). If `wrk` is installed, the same load is run through wrk too
(a Lua script rotates the users' Authorization headers), and both results are printed.
The server is stopped by its PID at the end.

    python bench/rest_heartbeat.py [--duration 10] [--concurrency 64] [--users 1000] [--no-wrk]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from livesignal.signal.model.auth import TokenCodec

REPO = Path(__file__).resolve().parent.parent
START_DEADLINE = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Result:
    tool: str
    concurrency: int
    duration: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu: float

    def line(self) -> str:
        rate = self.requests / self.duration
        per_request = self.server_cpu / self.requests * 1e6 if self.requests else 0.0
        return (
            f"{self.tool:8} conc={self.concurrency:<4} dur={self.duration:5.1f}s "
            f"req={self.requests:<8} err={self.errors:<5} {rate:9.0f} req/s  "
            f"p50={self.p50_ms:6.2f}ms p99={self.p99_ms:6.2f}ms  "
            f"server_cpu={self.server_cpu:5.2f}s "
            f"({self.server_cpu / self.duration:4.0%} of a core, {per_request:.0f} us/req)"
        )


class Server:
    """`python -m livesignal serve` as a child process, ended by its PID."""

    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livesignal", "serve", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_listening(self) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + START_DEADLINE
        needle = f"listening on http://127.0.0.1:{self.port}"
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise SystemExit(f"server exited early (code {self.proc.wait()})")
            if needle in line:
                # Nothing else reads stderr from now on: drain it so the pipe never fills.
                stderr = self.proc.stderr
                threading.Thread(target=stderr.read, daemon=True).start()
                return
        raise SystemExit("server did not start in time")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()


async def check(response: aiohttp.ClientResponse) -> None:
    body = await response.json()
    if response.status != 200 or body.get("code") != 0:
        raise SystemExit(f"set-up call failed: {response.status} {body}")


async def set_up(base: str, tokens: list[str], anchor: str) -> str:
    async with aiohttp.ClientSession(base) as session:
        async with session.post(
            "/client/live/room/instance", json={"title": "bench"}, headers={"Authorization": anchor}
        ) as response:
            body = await response.json()
            live_id: str = body["data"]["live_id"]
        async with session.put(
            f"/client/live/room/{live_id}", headers={"Authorization": anchor}
        ) as response:
            await check(response)
        await join_all(session, live_id, tokens)
        return live_id


async def join_all(session: aiohttp.ClientSession, live_id: str, tokens: list[str]) -> None:
    limit = asyncio.Semaphore(64)

    async def join(token: str) -> None:
        async with limit:
            async with session.post(
                f"/client/live/room/user/{live_id}", headers={"Authorization": token}
            ) as response:
                await check(response)

    await asyncio.gather(*(join(token) for token in tokens))


async def drive_aiohttp(
    base: str, live_id: str, tokens: list[str], concurrency: int, duration: float, pid: int
) -> Result:
    path = f"/client/live/room/heartbeat/{live_id}"
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector) as session:

        async def one(token: str) -> None:
            async with session.get(path, headers={"Authorization": token}) as response:
                await response.read()

        # Warm-up: open the keep-alive connections before measuring.
        await asyncio.gather(*(one(tokens[n % len(tokens)]) for n in range(concurrency)))
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        deadline = started + duration

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while True:
                sent = time.perf_counter()
                if sent >= deadline:
                    return
                headers = {"Authorization": tokens[i % len(tokens)]}
                i += concurrency
                async with session.get(path, headers=headers) as response:
                    body = await response.read()
                latencies.append(time.perf_counter() - sent)
                if response.status != 200 or b'"code":0' not in body:
                    errors += 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_before
    latencies.sort()
    return Result(
        tool="aiohttp",
        concurrency=concurrency,
        duration=elapsed,
        requests=len(latencies),
        errors=errors,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
        server_cpu=cpu,
    )


WRK_SCRIPT = """
tokens = {%s}
counter = 0
request = function()
  counter = counter + 1
  local token = tokens[(counter %% #tokens) + 1]
  return wrk.format("GET", "%s", {["Authorization"] = token})
end
"""


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def drive_wrk(
    base: str, live_id: str, tokens: list[str], concurrency: int, duration: float, pid: int
) -> Result | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk not installed: skipped (apt-get install -y wrk)")
        return None
    path = f"/client/live/room/heartbeat/{live_id}"
    quoted = ", ".join(f'"{t}"' for t in tokens)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (quoted, path))
    try:
        cpu_before = cpu_seconds(pid)
        ran = subprocess.run(
            [
                wrk,
                "-t2",
                f"-c{concurrency}",
                f"-d{int(duration)}s",
                "--latency",
                "-s",
                script.name,
                base,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 30,
        )
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        os.unlink(script.name)
    out = ran.stdout
    if ran.returncode != 0:
        print(f"wrk failed ({ran.returncode}):\n{out}{ran.stderr}")
        return None
    totals = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    assert totals is not None, out
    requests = int(totals.group(1))
    seconds = float(totals.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[totals.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"\s99%\s+([\d.]+\w+)", out)
    assert p50 is not None and p99 is not None
    return Result(
        tool="wrk",
        concurrency=concurrency,
        duration=seconds,
        requests=requests,
        errors=errors,
        p50_ms=_wrk_ms(p50.group(1)),
        p99_ms=_wrk_ms(p99.group(1)),
        server_cpu=cpu,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--users", type=int, default=1000, help="members heartbeating")
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk run")
    args = parser.parse_args()

    secret = secrets.token_urlsafe(48)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    codec = TokenCodec(secret, 86400)
    now = time.time()
    anchor = codec.issue("bench-anchor", now)[0]
    tokens = [codec.issue(f"bench-user-{i}", now)[0] for i in range(args.users)]

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(
            f'[server]\nport = {port}\n[auth]\njwt_secret = "{secret}"\n'
            # Nobody lapses while the load runs, however long the runs and the gap between.
            "[presence]\nheartbeat_interval = 60.0\n"
        )
        server = Server(config, port)
        try:
            server.wait_listening()
            print(
                f"livesignal serve pid={server.proc.pid} on {base}; {os.cpu_count()} CPUs; "
                f"python {sys.version.split()[0]}; {args.users} members"
            )
            live_id = asyncio.run(set_up(base, tokens, anchor))
            results = [
                asyncio.run(
                    drive_aiohttp(
                        base, live_id, tokens, args.concurrency, args.duration, server.proc.pid
                    )
                )
            ]
            if not args.no_wrk:
                wrk_result = drive_wrk(
                    base, live_id, tokens, args.concurrency, args.duration, server.proc.pid
                )
                if wrk_result is not None:
                    results.append(wrk_result)
            print("GET /client/live/room/heartbeat/{live_id}:")
            for result in results:
                print("  " + result.line())
        finally:
            code = server.stop()
            print(f"server stopped (exit {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
