"""REST load: keep-alive HTTP/1.1 GETs from worker processes, one request in flight per
connection, for a fixed time. A raw asyncio Protocol per connection (no HTTP client
library), so that a request costs the load generator far less than it costs the server.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.loadgen.procs import Workers, receive, run_worker

MAX_SAMPLES = 50_000
CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)")


class KeepAlive(asyncio.Protocol):
    def __init__(self, requests: list[bytes], offset: int, stop_at: float, done: Any) -> None:
        self.requests = requests
        self.index = offset
        self.stop_at = stop_at
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent = 0.0
        self.ok = 0
        self.errors = 0
        self.first_error = b""
        self.latencies: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send_next()

    def send_next(self) -> None:
        assert self.transport is not None
        self.sent = time.perf_counter()
        if time.monotonic() >= self.stop_at:
            self.transport.close()
            return
        self.transport.write(self.requests[self.index % len(self.requests)])
        self.index += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            found = CONTENT_LENGTH.search(head)
            end = head_end + 4 + (int(found.group(1)) if found else 0)
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4 : end]
            self.buffer = self.buffer[end:]
            self.latencies.append(time.perf_counter() - self.sent)
            if head.startswith(b"http/1.1 200") and b'"code":0' in body:
                self.ok += 1
            else:
                self.errors += 1
                self.first_error = self.first_error or head[:12] + b" " + body[:160]
            self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def worker_main(
    port: int, path: str, tokens: list[str], connections: int, conn: Connection
) -> None:
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {token}\r\n\r\n".encode()
        for token in tokens
    ]
    conn.send("ready")
    command = await receive(conn)
    start_at, duration = command[1], command[2]
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    cpu = time.process_time()
    loop = asyncio.get_running_loop()
    protocols = []
    for n in range(connections):
        done = loop.create_future()
        stop_at = start_at + duration
        _, protocol = await loop.create_connection(
            lambda n=n, done=done, stop_at=stop_at: KeepAlive(requests, n, stop_at, done),
            "127.0.0.1",
            port,
        )
        protocols.append(protocol)
    await asyncio.wait_for(asyncio.gather(*(p.done for p in protocols)), duration + 15)
    latencies = [lat for p in protocols for lat in p.latencies]
    if len(latencies) > MAX_SAMPLES:
        latencies = random.sample(latencies, MAX_SAMPLES)
    conn.send(
        {
            "ok": sum(p.ok for p in protocols),
            "errors": sum(p.errors for p in protocols),
            "first_error": next((p.first_error for p in protocols if p.first_error), b""),
            "latencies": latencies,
            "cpu": time.process_time() - cpu,
        }
    )


def worker(port: int, path: str, tokens: list[str], connections: int, conn: Connection) -> None:
    run_worker(worker_main, port, path, tokens, connections, conn)


async def run_gets(
    port: int, path: str, tokens: list[str], *, processes: int, connections: int, duration: float
) -> dict[str, Any]:
    """GET `path` with the tokens in turn for `duration` s: {ok, errors, first_error,
    latencies, elapsed, client_cpu (the load generator's CPU seconds)}."""
    args = [(port, path, tokens[p::processes], connections) for p in range(processes)]
    with Workers(worker, args) as workers:
        await workers.gather(timeout=60)
        start_at = time.monotonic() + 0.3
        workers.send_all(("go", start_at, duration))
        parts = await workers.gather(timeout=duration + 30)
    return {
        "ok": sum(p["ok"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "first_error": next((p["first_error"] for p in parts if p["first_error"]), b""),
        "latencies": [lat for p in parts for lat in p["latencies"]],
        "elapsed": duration,
        "client_cpu": sum(p["cpu"] for p in parts),
    }
