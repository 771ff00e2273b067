"""The WebSocket layer the HTTP server hands `/ws` upgrades to (hub._admit, SocketLink,
Connection), driven by a hostile client on a raw socket: every way a socket ends releases
what it holds, and what a client sends at the wrong moment breaks nothing.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from livesignal.signal.ws import link as socket_link
from livesignal.signal.ws.connection import Connection
from livesignal.signal.ws.frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT
from livesignal.signal.ws.hub import SocketHub
from tests.conftest import Connect, Harness, HarnessFactory, live_room
from tests.signal.ws.test_frames import frame

GRACE = 0.3  # CLOSE_GRACE in these tests


def hub_of(harness: Harness) -> SocketHub:
    """The app's hub: the owner of the /ws route's handler."""
    for route in harness.server.app.router.routes():
        if route.resource is not None and route.resource.canonical == "/ws":
            hub = getattr(route.handler, "__self__", None)
            if isinstance(hub, SocketHub):
                return hub
    raise AssertionError("no /ws route")


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class RawSocket:
    """A WebSocket client written by hand on a plain socket: it sends what a test says, when
    it says, and reads only when told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def open(
        cls, harness: Harness, user: str, *, after_head: bytes = b"", receive_buffer: int = 0
    ) -> RawSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", harness.server.port))
        raw = cls(sock)
        await raw.send(handshake(harness.token(user)) + after_head)
        return raw

    async def send(self, data: bytes) -> bool:
        """False if the server has closed (or reset) the connection."""
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except OSError:
            return False
        return True

    async def _more(self) -> bytes:
        async with asyncio.timeout(5):
            chunk = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        self.buffer += chunk
        return chunk

    async def head(self) -> bytes:
        """The server's HTTP answer head (101 or a refusal)."""
        while b"\r\n\r\n" not in self.buffer:
            assert await self._more(), f"closed before answering: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    async def next_frame(self) -> tuple[int, bytes] | None:
        """The server's next frame (opcode, payload); None at a clean end of the stream."""
        while True:
            parsed = server_frame(self.buffer)
            if parsed is not None:
                opcode, payload, size = parsed
                self.buffer = self.buffer[size:]
                return opcode, payload
            if not await self._more():
                return None

    async def next_text(self) -> dict[str, Any]:
        while True:
            got = await self.next_frame()
            assert got is not None, "closed"
            if got[0] == OP_TEXT:
                return dict(orjson.loads(got[1]))

    def close(self) -> None:
        self.sock.close()


def handshake(token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def server_frame(data: bytes) -> tuple[int, bytes, int] | None:
    """(opcode, payload, bytes used) of the unmasked frame at the start of `data`, if whole."""
    if len(data) < 2:
        return None
    length, start = data[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(data[2:10], "big"), 10
    if len(data) < start + length:
        return None
    return data[0] & 0x0F, data[start : start + length], start + length


def text(value: dict[str, Any]) -> bytes:
    return frame(OP_TEXT, orjson.dumps(value))


@pytest.fixture
async def raw_sockets() -> AsyncIterator[list[RawSocket]]:
    opened: list[RawSocket] = []
    yield opened
    for raw in opened:
        raw.close()


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_link, "CLOSE_GRACE", GRACE)


@pytest.mark.both_backends
async def test_a_client_gone_while_its_join_runs_leaves_no_ghost_member(
    make_harness: HarnessFactory, connect: Connect, raw_sockets: list[RawSocket]
) -> None:
    """The peer disconnects while room.join is in progress: the join completes after the
    socket is gone, and the member it made leaves at once (member.left), not never."""
    harness = await make_harness()
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    rooms = harness.services.rooms
    join = rooms.join
    entered, proceed = asyncio.Event(), asyncio.Event()

    async def slow_join(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await proceed.wait()
        return await join(*args, **kwargs)

    rooms.join = slow_join  # type: ignore[method-assign]
    hub = hub_of(harness)
    ghost = await RawSocket.open(harness, "ghost")
    raw_sockets.append(ghost)
    assert (await ghost.head()).startswith(b"HTTP/1.1 101")
    await ghost.send(text({"id": 1, "type": "room.join", "data": {"live_id": live_id}}))
    await asyncio.wait_for(entered.wait(), 3)
    ghost.close()
    await until(lambda: len(hub.connections) == 1)  # the server saw it go
    proceed.set()
    assert (await anchor.next_event("member.joined"))["data"]["user"]["user_id"] == "ghost"
    left = await anchor.next_event("member.left", timeout=3)
    assert left["data"] == {"user_id": "ghost", "reason": "leave"}


def _stop_writing(connection: Connection) -> None:
    """A tiny kernel send buffer, so that the server's own buffer fills quickly."""
    sock = connection.link.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


@pytest.mark.parametrize("ending", ["close frame", "half-close"])
async def test_a_peer_that_ends_without_reading_is_cut_after_the_grace(
    make_harness: HarnessFactory, short_grace: None, raw_sockets: list[RawSocket], ending: str
) -> None:
    """A client that stops reading, has the server buffer data for it, then starts the
    closing handshake (or half-closes): the server does not wait forever for its buffer to
    drain; the socket is gone within the grace and no longer counts against the user."""
    harness = await make_harness({"limits": {"sockets_per_user": 1}})
    hub = hub_of(harness)
    raw = await RawSocket.open(harness, "alice", receive_buffer=4096)
    raw_sockets.append(raw)
    await until(lambda: len(hub.connections) == 1)
    connection = next(iter(hub.connections))
    _stop_writing(connection)
    pings = frame(OP_PING, b"p" * 125) * 200  # 25 KB of pongs to write back
    transport = connection.link.transport
    while transport.get_write_buffer_size() == 0:  # well before 1 MiB (4009)
        assert await raw.send(pings)
        await asyncio.sleep(0.01)
    if ending == "close frame":
        await raw.send(frame(OP_CLOSE, (1000).to_bytes(2, "big")))
    else:
        raw.sock.shutdown(socket.SHUT_WR)
    await until(lambda: not hub.connections, timeout=GRACE + 2)
    # The user's one socket is free again.
    second = await RawSocket.open(harness, "alice")
    raw_sockets.append(second)
    assert (await second.head()).startswith(b"HTTP/1.1 101")


async def test_a_protocol_error_reaches_a_client_still_sending_as_a_close_then_a_clean_end(
    make_harness: HarnessFactory, raw_sockets: list[RawSocket]
) -> None:
    """A frame over 64 KiB is refused with 1009 as soon as its length is known, while the
    client is still sending it: the server keeps reading (and dropping) what comes, so the
    client reads the close frame and then the end of the stream, not a reset."""
    harness = await make_harness()
    raw = await RawSocket.open(harness, "alice")
    raw_sockets.append(raw)
    assert (await raw.head()).startswith(b"HTTP/1.1 101")
    assert (await raw.next_text())["type"] == "welcome"
    # Header and payload in one go: most of it is still unread when the server decides.
    sending = asyncio.ensure_future(raw.send(frame(OP_TEXT, b"x" * (4 << 20))))
    try:
        close = await raw.next_frame()
        assert close is not None and close[0] == OP_CLOSE
        assert int.from_bytes(close[1][:2], "big") == 1009
        assert await sending  # all of it was read (and dropped), none answered with a reset
        await raw.send(frame(OP_CLOSE, (1009).to_bytes(2, "big")))  # the client's answer
        assert await raw.next_frame() is None  # then a FIN: the end of the stream
    finally:
        sending.cancel()


async def test_what_a_client_sends_before_the_101_is_answered_after_the_welcome(
    make_harness: HarnessFactory, raw_sockets: list[RawSocket]
) -> None:
    """PROTOCOL §4.1: the first frame from the server is the welcome, even for a client that
    sent frames together with its handshake."""
    harness = await make_harness()
    early = text({"type": "ping"}) + frame(OP_PING, b"early") + text({"id": 1, "type": "x"})
    raw = await RawSocket.open(harness, "alice", after_head=early)
    raw_sockets.append(raw)
    assert (await raw.head()).startswith(b"HTTP/1.1 101")
    first = await raw.next_frame()
    assert first is not None and first[0] == OP_TEXT
    assert orjson.loads(first[1])["type"] == "welcome"
    assert await raw.next_frame() == (OP_TEXT, b'{"type":"pong"}')
    assert await raw.next_frame() == (OP_PONG, b"early")
    reply = await raw.next_text()
    assert (reply["id"], reply["code"]) == (1, 400)


async def test_a_failure_while_admitting_answers_500_and_frees_the_socket_counts(
    make_harness: HarnessFactory,
    raw_sockets: list[RawSocket],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error no layer expected, while the upgrade is decided, is a 500 and a closed
    connection, as from any failing handler; the socket it would have been counts no more."""
    harness = await make_harness({"limits": {"sockets_per_user": 1}})
    relays = harness.services.relays
    pending = relays.pending

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(relays, "pending", broken)
    raw = await RawSocket.open(harness, "alice")
    raw_sockets.append(raw)
    assert (await raw.head()).startswith(b"HTTP/1.1 500")
    monkeypatch.setattr(relays, "pending", pending)
    again = await RawSocket.open(harness, "alice")
    raw_sockets.append(again)
    assert (await again.head()).startswith(b"HTTP/1.1 101")


async def test_an_upgrade_head_over_the_limit_gets_the_parsers_400(
    make_harness: HarnessFactory, raw_sockets: list[RawSocket]
) -> None:
    """A /ws head with a header line over aiohttp's limit is refused as any request's would
    be, even when it arrives whole in one read."""
    harness = await make_harness()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", harness.server.port))
    raw = RawSocket(sock)
    raw_sockets.append(raw)
    head = handshake(harness.token("alice"))
    await raw.send(head[:-2] + b"X-Padding: " + b"p" * 20_000 + b"\r\n\r\n")
    assert (await raw.head()).split(b" ", 2)[1] == b"400"
    assert b"too long" in raw.buffer


async def test_an_upgrade_decided_while_the_server_shuts_down_is_refused_with_503(
    make_harness: HarnessFactory, raw_sockets: list[RawSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown closes every open socket with 1001; one still being admitted then gets a
    plain 503 instead of a socket nobody will close."""
    harness = await make_harness()
    relays = harness.services.relays
    pending = relays.pending
    admitting = asyncio.Event()
    release = asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> Any:
        admitting.set()
        await release.wait()
        return await pending(*args, **kwargs)

    monkeypatch.setattr(relays, "pending", slow)
    raw = await RawSocket.open(harness, "alice")
    raw_sockets.append(raw)
    await asyncio.wait_for(admitting.wait(), 5)
    shutting_down = asyncio.ensure_future(harness.server.app.shutdown())
    await asyncio.sleep(0)  # on_shutdown has run close_all's first step
    release.set()
    head = await raw.head()
    assert head.startswith(b"HTTP/1.1 503"), head
    assert b"shutting down" in raw.buffer
    await shutting_down
