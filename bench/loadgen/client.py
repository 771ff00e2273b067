"""One raw WebSocket client socket, as an asyncio Protocol: cheap enough that thousands of
them in a load-generator process cost little of the CPU the server needs.

It upgrades, runs its dialect's set-up steps, then counts chat deliveries (one marker each),
answers every ping with a pong, and, when sampled, parses the send time out of every chat
message it receives to measure the delivery latency.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from bench.loadgen.wire import Dialect, upgrade_request

STAMP = re.compile(rb"@@T(\d+\.\d+)@@")
SETUP_TIMEOUT = 30.0


class RawSocket(asyncio.Protocol):
    def __init__(self, dialect: Dialect, sampled: bool = False) -> None:
        self.dialect = dialect
        self.sampled = sampled
        self.transport: asyncio.Transport | None = None
        self.count = 0  # chat messages received
        self.expected = 0  # when count reaches it, `on_done` is called
        self.on_done: Callable[[], None] | None = None
        self.latencies: list[float] = []
        self.last_receive = 0.0
        self.pongs = 0
        self.lost = False
        self._upgraded = False
        self._tail = b""  # the end of the previous chunk, for markers split across chunks
        self._stamps = b""
        self._overlap = max(len(dialect.marker), len(dialect.ping)) - 1
        self._ping_back = 1 - len(dialect.ping)  # patterns are at least 2 bytes long
        self._marker_back = 1 - len(dialect.marker)
        self._seen = b""  # what arrived while a set-up step waits for its acknowledgement
        self._waiting: tuple[bytes, bytes | None, asyncio.Future[None]] | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # Each pattern is searched in its own length - 1 bytes of the previous chunk plus
        # this one: found once even when split across chunks, never twice.
        tail = self._tail
        self._tail = (tail + data)[-self._overlap :]
        if self._upgraded:
            pings = (tail[self._ping_back :] + data).count(self.dialect.ping)
            if pings and self.transport is not None:
                self.transport.write(self.dialect.pong * pings)
                self.pongs += pings
        found = (tail[self._marker_back :] + data).count(self.dialect.marker)
        if found:
            now = time.monotonic()
            self.count += found
            self.last_receive = now
            if self.sampled:
                self._sample(data, now)
            if self.on_done is not None and self.count >= self.expected:
                self.on_done()
                self.on_done = None
        if self._waiting is not None:
            self._seen = (self._seen + data)[-65536:]
            self._check_ack()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiting is not None and not self._waiting[2].done():
            self._waiting[2].set_exception(ConnectionError("the server closed the socket"))

    # --- set-up ---------------------------------------------------------------------------
    async def setup(self, port: int, path: str, steps: list[tuple[bytes, bytes, bytes | None]]):
        """Upgrade, then send each step's frame and wait for its acknowledgement."""
        await self._expect(upgrade_request(port, path), b"\r\n\r\n", None)
        if not self._seen.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {self._seen[:80]!r}")
        self._upgraded = True
        for frame, ok, fail in steps:
            await self._expect(frame, ok, fail)

    async def _expect(self, frame: bytes, ok: bytes, fail: bytes | None) -> None:
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self._seen = b""
        self._waiting = (ok, fail, future)
        self.transport.write(frame)
        try:
            await asyncio.wait_for(future, SETUP_TIMEOUT)
        finally:
            self._waiting = None

    def _check_ack(self) -> None:
        assert self._waiting is not None
        ok, fail, future = self._waiting
        if future.done():
            return
        if ok in self._seen:
            future.set_result(None)
        elif fail is not None and fail in self._seen:
            start = self._seen.index(fail)
            future.set_exception(RuntimeError(f"refused: {self._seen[start : start + 160]!r}"))

    # --- load -----------------------------------------------------------------------------
    def _sample(self, data: bytes, now: float) -> None:
        stamps = self._stamps + data
        end = 0
        for match in STAMP.finditer(stamps):
            self.latencies.append(now - float(match.group(1)))
            end = match.end()
        self._stamps = stamps[end:][-40:]

    def wait_for(self, expected: int, on_done: Callable[[], None]) -> None:
        """Call `on_done` once `expected` chat messages have arrived (counting from the start)."""
        self.expected = expected
        if self.count >= expected:
            on_done()
        else:
            self.on_done = on_done

    def write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_socket(
    dialect: Dialect, port: int, user: str, room: str, *, admin: bool = False, sampled: bool = False
) -> RawSocket:
    """A socket of `user` that completed its dialect's set-up in `room`."""
    loop = asyncio.get_running_loop()
    _, sock = await loop.create_connection(lambda: RawSocket(dialect, sampled), "127.0.0.1", port)
    try:
        await sock.setup(port, dialect.path(user, admin), dialect.steps(room, admin))
    except BaseException:
        sock.close()
        raise
    return sock


async def open_many(
    specs: list[tuple[str, str, bool, bool]], dialect: Dialect, port: int, concurrency: int = 64
) -> list[RawSocket]:
    """Open sockets for (user, room, admin, sampled) specs, `concurrency` set-ups at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(user: str, room: str, admin: bool, sampled: bool) -> RawSocket:
        async with gate:
            return await open_socket(dialect, port, user, room, admin=admin, sampled=sampled)

    return list(await asyncio.gather(*(one(*spec) for spec in specs)))
