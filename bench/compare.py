"""Side-by-side fan-out: livesignal vs python-socketio 5 vs Node socket.io 4, in one run.

    python bench/compare.py [--sockets 1000 --messages 200 --rate 100]

Scenario "fan-out": one room of N sockets; one sender emits M chat messages paced at R
messages/s; every socket must receive every message. For each server it reports the server's
CPU µs per delivery (user and kernel apart, from /proc/<pid>/stat), deliveries/s and the
delivery latency p50/p99 (the sender's send time is embedded in the message text; every 10th
receiving socket parses every timestamp it receives, the others only count).

The same minimal raw-socket load generator drives all servers: livesignal receivers upgrade
/ws and send a `room.join` frame; socket.io receivers speak Engine.IO v4 over the websocket
transport directly (`40`, then `421["join","room"]`) and count `42["chat"` frames. Receivers
run in 2 worker processes; the sender runs in the main process. Prints a table and writes
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BENCH_SECRET,
    free_port,
    percentile,
    running_server,
    wait_for_port,
)

WORKERS = 2
SAMPLE_EVERY = 10  # every 10th socket parses every timestamp it receives
CONNECT_CONCURRENCY = 64
STAMP = re.compile(rb"@@T(\d+\.\d+)@@")
PAD = "x" * 64


def stamp_text() -> str:
    # CLOCK_MONOTONIC is system-wide on Linux, so it is comparable across processes.
    return f"@@T{time.monotonic():.6f}@@ {PAD}"


def ws_frame(text: str) -> bytes:
    """A masked client text frame."""
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if len(payload) < 126:
        header = bytes([0x81, 0x80 | len(payload)])
    else:
        header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return header + mask + masked


def upgrade_request(port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# --- the servers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How the raw load generator talks to one family of servers."""

    name: str  # "livesignal" or "socketio"
    marker: bytes  # one per delivered chat message
    ready: bytes  # the acknowledgement of the join


LIVESIGNAL = Kind("livesignal", b'"event":"chat.message"', b'"id":1,"type":"reply","code":0')
SOCKETIO = Kind("socketio", b'42["chat"', b'431["ok"]')


def livesignal_token(user: str) -> str:
    from livesignal.signal.auth import TokenCodec

    return TokenCodec(BENCH_SECRET, 86400).issue(user, time.time())[0]


@contextmanager
def running_process(argv: list[str], cwd: Path | None = None) -> Iterator[tuple[int, int]]:
    """Start a server listening on a free loopback port; yield (pid, port)."""
    port = free_port()
    process = subprocess.Popen(
        [*argv, str(port)], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process)
        yield process.pid, port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_ticks(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of one process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


# --- receivers (worker processes) ----------------------------------------------------------


class Receiver:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sampled: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.sampled = sampled
        self.count = 0
        self.latencies: list[float] = []
        self.last_receive = 0.0

    @classmethod
    async def open(cls, kind: Kind, port: int, index: int, live_id: str) -> Receiver:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if kind.name == LIVESIGNAL.name:
            writer.write(upgrade_request(port, f"/ws?token={livesignal_token(f'viewer{index}')}"))
            join = {"id": 1, "type": "room.join", "data": {"live_id": live_id}}
            # (frame to send, acknowledgement to wait for) in order
            steps = [(orjson.dumps(join).decode(), kind.ready)]
        else:
            writer.write(upgrade_request(port, "/socket.io/?EIO=4&transport=websocket"))
            # Node socket.io closes the connection on an event for a namespace whose connect
            # is not complete yet: wait for the connect reply before the join.
            steps = [("40", b"40{"), ('421["join","room"]', kind.ready)]
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        receiver = cls(reader, writer, sampled=index % SAMPLE_EVERY == 0)
        for text, ack in steps:
            writer.write(ws_frame(text))
            await writer.drain()
            await receiver.wait_ready(ack)
        return receiver

    async def wait_ready(self, ready: bytes) -> None:
        data = b""
        while ready not in data:
            chunk = await self.reader.read(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the socket before the join was acknowledged")
            data = data[-len(ready) :] + chunk

    async def count_until(self, marker: bytes, expected: int) -> None:
        tail = b""
        stamps = b""
        while self.count < expected:
            chunk = await self.reader.read(1 << 16)
            now = time.monotonic()
            if not chunk:
                raise ConnectionError("server closed the socket")
            data = tail + chunk
            self.count += data.count(marker)
            tail = data[-(len(marker) - 1) :]
            self.last_receive = now
            if self.sampled:
                stamps += chunk
                end = 0
                for match in STAMP.finditer(stamps):
                    self.latencies.append(now - float(match.group(1)))
                    end = match.end()
                stamps = stamps[end:][-40:]


async def worker_main(
    kind: Kind, port: int, indexes: list[int], live_id: str, messages: int, conn: Any
) -> None:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(index: int) -> Receiver:
        async with gate:
            return await asyncio.wait_for(Receiver.open(kind, port, index, live_id), 30)

    receivers = await asyncio.gather(*(open_one(i) for i in indexes))
    conn.send("ready")
    loop = asyncio.get_running_loop()
    timeout = float(await loop.run_in_executor(None, conn.recv))
    tasks = [asyncio.create_task(r.count_until(kind.marker, messages)) for r in receivers]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            pending.add(task)
    conn.send(
        {
            "count": sum(min(r.count, messages) for r in receivers),
            "complete": len(receivers) - len(pending),
            "latencies": [lat for r in receivers for lat in r.latencies],
            "last_receive": max(r.last_receive for r in receivers),
        }
    )
    for receiver in receivers:
        receiver.writer.close()


def worker(
    kind: Kind, port: int, indexes: list[int], live_id: str, messages: int, conn: Any
) -> None:
    try:
        asyncio.run(worker_main(kind, port, indexes, live_id, messages, conn))
    except BaseException as error:  # report instead of hanging the main process
        conn.send(f"error: {error!r}")


# --- sender (main process) -----------------------------------------------------------------


async def pace(rate: float, messages: int, send: Any) -> float:
    """Call send(text) messages times at rate/s; return the time of the first send."""
    started = time.monotonic()
    for index in range(messages):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        send(stamp_text())
    return started


class LivesignalSender:
    def __init__(self, port: int) -> None:
        self.port = port
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> str:
        from livesignal.client import SignalClient

        self.client = await SignalClient.connect(
            f"ws://127.0.0.1:{self.port}/ws", livesignal_token("anchor")
        )
        room = await self.client.request("room.create", title="bench")
        await self.client.request("room.start", live_id=room["live_id"])
        self.live_id = str(room["live_id"])
        return self.live_id

    def send(self, text: str) -> None:
        request = self.client.request("chat.send", live_id=self.live_id, text=text)
        self.tasks.append(asyncio.create_task(request))

    async def close(self) -> None:
        await asyncio.gather(*self.tasks)
        await self.client.close()


class SocketioSender:
    def __init__(self, port: int) -> None:
        self.port = port

    async def start(self) -> str:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(upgrade_request(self.port, "/socket.io/?EIO=4&transport=websocket"))
        await self.reader.readuntil(b"\r\n\r\n")
        self.writer.write(ws_frame("40"))
        data = b""
        while b"40{" not in data:  # the namespace connect reply
            chunk = await self.reader.read(1 << 16)
            if not chunk:
                raise ConnectionError("socket.io server closed the sender socket")
            data += chunk
        self.draining = asyncio.create_task(self._drain())
        return "room"

    async def _drain(self) -> None:
        while await self.reader.read(1 << 16):
            pass

    def send(self, text: str) -> None:
        self.writer.write(ws_frame("42" + orjson.dumps(["chat", text]).decode()))

    async def close(self) -> None:
        await self.writer.drain()
        self.draining.cancel()
        self.writer.close()


# --- one measurement -----------------------------------------------------------------------


@dataclass
class Result:
    server: str
    user_us: float = 0.0
    kernel_us: float = 0.0
    per_second: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    delivered: int = 0
    expected: int = 0
    note: str = ""
    samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


async def measure(
    label: str, kind: Kind, pid: int, port: int, sockets: int, messages: int, rate: float
) -> Result:
    sender: LivesignalSender | SocketioSender = (
        LivesignalSender(port) if kind.name == LIVESIGNAL.name else SocketioSender(port)
    )
    room = await sender.start()
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for w in range(WORKERS):
        parent, child = context.Pipe()
        indexes = list(range(w, sockets, WORKERS))
        process = context.Process(
            target=worker, args=(kind, port, indexes, room, messages, child), daemon=True
        )
        process.start()
        pipes.append(parent)
        processes.append(process)
    loop = asyncio.get_running_loop()
    result = Result(label, expected=sockets * messages)
    try:
        replies = await asyncio.wait_for(
            asyncio.gather(*(loop.run_in_executor(None, p.recv) for p in pipes)), 120
        )
        errors = [r for r in replies if r != "ready"]
        if errors:
            result.note = str(errors[0])
            return result
        timeout = messages / rate + 30
        await asyncio.sleep(0.5)  # let the joins settle
        user0, kernel0 = cpu_ticks(pid)
        for pipe in pipes:
            pipe.send(timeout)
        first_send = await pace(rate, messages, sender.send)
        reports = await asyncio.wait_for(
            asyncio.gather(*(loop.run_in_executor(None, p.recv) for p in pipes)), timeout + 30
        )
        user1, kernel1 = cpu_ticks(pid)
        bad = [r for r in reports if not isinstance(r, dict)]
        if bad:
            result.note = str(bad[0])
            return result
        delivered = sum(r["count"] for r in reports)
        latencies = [lat for r in reports for lat in r["latencies"]]
        elapsed = max(r["last_receive"] for r in reports) - first_send
        result.delivered = delivered
        result.samples = len(latencies)
        if delivered:
            result.user_us = (user1 - user0) / delivered * 1e6
            result.kernel_us = (kernel1 - kernel0) / delivered * 1e6
            result.per_second = delivered / elapsed
        if latencies:
            result.p50_ms = percentile(latencies, 0.5) * 1000
            result.p99_ms = percentile(latencies, 0.99) * 1000
        incomplete = sum(
            len(range(w, sockets, WORKERS)) - r["complete"] for w, r in enumerate(reports)
        )
        if delivered < result.expected:
            result.note = (
                f"{result.expected - delivered} deliveries missing ({incomplete} sockets short)"
            )
        return result
    finally:
        await sender.close()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join()


def run_one(
    label: str, kind: Kind, pid: int, port: int, sockets: int, messages: int, rate: float
) -> Result:
    print(f"-- {label}: {sockets} sockets, {messages} messages at {rate:g}/s", flush=True)
    started = time.monotonic()
    result = asyncio.run(measure(label, kind, pid, port, sockets, messages, rate))
    print(
        f"   {result.delivered}/{result.expected} delivered, "
        f"CPU {result.user_us:.2f}+{result.kernel_us:.2f} µs/delivery, "
        f"{result.per_second:,.0f}/s, p50 {result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms "
        f"({result.samples} samples, {time.monotonic() - started:.1f} s) {result.note}",
        flush=True,
    )
    return result


# --- report --------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}"


def git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(results: list[Result]) -> str:
    lines = [
        "| server | µs CPU/delivery (user, kernel) | deliveries/s | latency p50 / p99 | notes |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        if r.delivered:
            lines.append(
                f"| {r.server} | {r.user_us + r.kernel_us:.2f} ({r.user_us:.2f}, "
                f"{r.kernel_us:.2f}) | {r.per_second:,.0f} | {r.p50_ms:.1f} ms / "
                f"{r.p99_ms:.1f} ms | {r.note} |"
            )
        else:
            lines.append(f"| {r.server} | – | – | – | {r.note or 'no deliveries'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    n, m, rate = args.sockets, args.messages, args.rate
    results: list[Result] = []
    # Long heartbeats: the raw receivers do not answer pings.
    base = "[presence]\nheartbeat_interval = 60.0\n"
    for flush in (0.0, 0.005):
        label = f"livesignal (flush_interval = {flush:g})"
        with running_server(base + f"[ws]\nflush_interval = {flush}\n") as server:
            results.append(run_one(label, LIVESIGNAL, server.process.pid, server.port, n, m, rate))

    label = "python-socketio 5 (aiohttp)"
    try:
        from importlib.metadata import version

        import socketio  # noqa: F401

        label = f"python-socketio {version('python-socketio')} (aiohttp)"
    except ImportError:
        print(f"-- {label}: skipped, python-socketio is not installed (pip install -e '.[bench]')")
        results.append(Result(label, note="skipped: python-socketio not installed"))
    else:
        script = ROOT / "bench" / "compare" / "socketio_server.py"
        with running_process([sys.executable, str(script)]) as (pid, port):
            results.append(run_one(label, SOCKETIO, pid, port, n, m, rate))

    label = "Node socket.io 4"
    node = shutil.which("node")
    node_dir = ROOT / "bench" / "compare" / "node"
    if node is None:
        print(f"-- {label}: skipped, node is not installed")
        results.append(Result(label, note="skipped: node not installed"))
    elif not (node_dir / "node_modules" / "socket.io").is_dir():
        print(f"-- {label}: skipped, run `npm install --prefix bench/compare/node`")
        results.append(Result(label, note="skipped: socket.io not installed under node_modules"))
    else:
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
        pkg = orjson.loads((node_dir / "node_modules" / "socket.io" / "package.json").read_bytes())
        label = f"Node socket.io {pkg['version']} (node {version.strip()})"
        with running_process([node, str(node_dir / "server.js")], cwd=node_dir) as (pid, port):
            results.append(run_one(label, SOCKETIO, pid, port, n, m, rate))

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = "\n".join(
        [
            "# Fan-out: livesignal vs socket.io",
            "",
            f"Scenario: one room of {n} sockets; one sender emits {m} chat messages paced at "
            f"{rate:g} messages/s; every socket must receive every message "
            f"({n * m:,} deliveries per server). Generated by `python bench/compare.py "
            f"--sockets {n} --messages {m} --rate {rate:g}`.",
            "",
            table(results),
            "",
            "- µs CPU/delivery: the server process's utime + stime (from /proc/<pid>/stat) over "
            "the sending phase, divided by the deliveries; user and kernel apart.",
            "- deliveries/s: deliveries / (last receive − first send); paced, so at most about "
            f"{n * rate:,.0f}/s.",
            f"- latency: sender's send time (embedded in the message) → receive time, from every "
            f"{SAMPLE_EVERY}th socket, all messages.",
            f"- load generator: raw sockets in {WORKERS} receiver processes + the sender in the "
            "main process, all on the same machine as the server.",
            "",
            f"Machine: {machine()}  ",
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}  ",
            f"Date: {now}  ",
            f"Commit: `{git_head()}`",
            "",
        ]
    )
    print()
    print(table(results))
    args.output.write_text(report)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
