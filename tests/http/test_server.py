"""The HTTP server (livesignal/http/server.py), PROTOCOL §7 and §2 at the socket: stalled
connections are closed, parser errors answer a JSON 400 that quotes nothing back, and no
token reaches the server's log.

Against a real `livesignal serve` (tests/cli.py starts it on a free port and stops it by
PID). Every connection is to 127.0.0.1; waits are deadlines, and the only sleep waits for the
timeouts themselves to have passed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp
import orjson

from livesignal.app import create_app
from livesignal.client import SignalClient
from livesignal.http.server import start_http_server
from livesignal.signal.model.auth import TokenCodec
from tests.cli import SECRET, config, serve, stop
from tests.conftest import make_settings
from tests.ports import free_port

HEADER_TIMEOUT = 0.5
IDLE_TIMEOUT = 1.0
GRACE = 1.0  # a stalled connection is closed within header_timeout + this
EACH = 30  # connections of each stalling kind
TRICKLE = 0.1  # seconds between the bytes of a slowloris head


def guarded_config(tmp_path: Path) -> Path:
    return config(
        tmp_path,
        f'[auth]\njwt_secret = "{SECRET}"\n'
        # Pings every 0.25 s: a socket that did not answer them would be gone in 0.75 s.
        "[presence]\nheartbeat_interval = 0.25\n"
        f"[limits]\nheader_timeout = {HEADER_TIMEOUT}\nidle_timeout = {IDLE_TIMEOUT}\n",
    )


def client_token(user_id: str) -> str:
    token, _ = TokenCodec(SECRET, 3600).issue(user_id, time.time())
    return token


class Raw:
    """A TCP connection driven by hand, on a plain socket (no stream buffering to lose data
    to a reset: what the server sent before closing is still read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def open(cls, port: int) -> Raw:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send(self, data: bytes) -> bool:
        """False if the server has closed the connection."""
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except OSError:
            return False
        return True

    async def _recv(self) -> bytes:
        try:
            return await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        except ConnectionResetError:
            return b""

    async def until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        while chunk := await self._recv():
            self.buffer += chunk
        received, self.buffer = self.buffer, b""
        return received

    async def response(self) -> tuple[int, bytes]:
        """One HTTP response with a Content-Length (keep-alive: the connection stays open)."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = await self._recv()
            assert chunk, f"closed mid-response: {self.buffer!r}"
            self.buffer += chunk
        head, rest = self.buffer.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            chunk = await self._recv()
            assert chunk, "closed mid-body"
            rest += chunk
        self.buffer = rest[length:]
        return int(head.split(b" ", 2)[1]), rest[:length]

    def close(self) -> None:
        self.sock.close()


async def seconds_until_closed(port: int, head: bytes, *, trickle: float | None = None) -> float:
    """Connect, send `head` (all at once, or a byte every `trickle` s) and wait for the server
    to close: seconds from connecting. Fails past header_timeout + GRACE."""
    loop = asyncio.get_running_loop()
    raw = await Raw.open(port)
    opened = loop.time()
    closed = asyncio.ensure_future(raw.until_closed())
    try:
        if trickle is None:
            await raw.send(head)
        else:
            for index in range(len(head)):
                if closed.done() or not await raw.send(head[index : index + 1]):
                    break
                await asyncio.wait({closed}, timeout=trickle)
        deadline = opened + HEADER_TIMEOUT + GRACE
        await asyncio.wait_for(asyncio.shield(closed), max(0.0, deadline - loop.time()))
        return loop.time() - opened
    finally:
        closed.cancel()
        raw.close()


async def test_stalled_connections_are_closed_while_real_clients_keep_working(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with serve("--config", str(guarded_config(tmp_path)), "--port", str(port), port=port):
        token = client_token("alice")
        loop = asyncio.get_running_loop()
        socket_client = await SignalClient.connect(f"ws://127.0.0.1:{port}/ws", token)
        socket_opened = loop.time()
        profile = f"http://127.0.0.1:{port}/client/user/profile"
        async with aiohttp.ClientSession(headers={"Authorization": token}) as rest:

            async def rest_calls_until(done: asyncio.Future[object]) -> int:
                """REST calls on a kept-alive connection while the stalls last; how many."""
                calls = 0
                while not done.done():
                    async with rest.get(profile) as response:
                        assert response.status == 200, await response.text()
                    calls += 1
                    await asyncio.wait({done}, timeout=0.05)
                return calls

            half_upgrade = (
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            )
            slowloris = b"GET /client/user/profile HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
            slowloris += b"a" * 200
            stalls = asyncio.gather(
                *(seconds_until_closed(port, b"") for _ in range(EACH)),
                *(seconds_until_closed(port, half_upgrade) for _ in range(EACH)),
                *(seconds_until_closed(port, slowloris, trickle=TRICKLE) for _ in range(EACH)),
            )
            rest_calls = asyncio.ensure_future(rest_calls_until(stalls))
            closed_after = await stalls
            assert await rest_calls > 0
            assert len(closed_after) == 3 * EACH
            assert max(closed_after) <= HEADER_TIMEOUT + GRACE, max(closed_after)

            # The socket has now been open past both timeouts, sending nothing but pongs.
            await asyncio.sleep(
                max(0.0, socket_opened + HEADER_TIMEOUT + IDLE_TIMEOUT + 0.2 - loop.time())
            )
            assert socket_client.close_code is None
            assert (await socket_client.request("user.profile"))["user_id"] == "alice"
            async with rest.get(profile) as response:
                assert response.status == 200
        await socket_client.close()


async def test_keep_alive_connections_idle_or_half_sent_are_closed(tmp_path: Path) -> None:
    port = free_port()
    request = b"GET /client/user/profile HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    async with serve("--config", str(guarded_config(tmp_path)), "--port", str(port), port=port):
        loop = asyncio.get_running_loop()
        idle, half_sent = await Raw.open(port), await Raw.open(port)
        try:
            for raw in (idle, half_sent):
                assert await raw.send(request)
                assert (await raw.response())[0] == 401  # kept alive after the answer
            answered = loop.time()
            # The next request's first bytes start header_timeout on a kept-alive connection.
            assert await half_sent.send(b"GET /client/us")
            half_sent_at = loop.time()
            closed = await asyncio.wait_for(half_sent.until_closed(), HEADER_TIMEOUT + GRACE)
            assert closed == b""
            assert loop.time() - half_sent_at < IDLE_TIMEOUT - 0.1  # not the idle timer
            # A connection that sends nothing after its answer goes at idle_timeout, not at
            # header_timeout: it is idle, not stalling a request.
            closed = await asyncio.wait_for(idle.until_closed(), IDLE_TIMEOUT + GRACE)
            assert closed == b""
            assert loop.time() - answered >= IDLE_TIMEOUT - 0.2
        finally:
            idle.close()
            half_sent.close()


async def test_parser_errors_answer_a_json_400_that_leaks_no_token(tmp_path: Path) -> None:
    port = free_port()
    token = client_token("mallory")
    signature = token.rsplit(".", 1)[1]
    sent = token.encode()
    line = b"GET /ws?token=" + sent
    bad_requests = {
        "raw UTF-8 in the URL": line + "€".encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a 100 KB Authorization header": (
            b"GET /client/user/profile HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + sent + b"A" * 100_000 + b"\r\n\r\n"
        ),
        "a request line over 8 KB": line + b"&p=" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",
        "a bad method": b"G\x01T" + line[3:] + b" HTTP/1.1\r\n\r\n",
        "a bad header": line + b" HTTP/1.1\r\nX-A: \x01" + sent + b"\r\n\r\n",
    }
    async with serve(
        "--config", str(guarded_config(tmp_path)), "--port", str(port), port=port
    ) as served:
        for name, request in bad_requests.items():
            raw = await Raw.open(port)
            try:
                await raw.send(request)
                answer = await asyncio.wait_for(raw.until_closed(), 5)
            finally:
                raw.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 400 ") or head.startswith(b"HTTP/1.1 400 "), name
            assert signature.encode() not in answer and b"eyJ" not in answer, name
            envelope = orjson.loads(body)
            assert set(envelope) == {"request_id", "code", "message"}, name
            assert envelope["code"] == 400, name
            assert envelope["message"].startswith("bad request: "), name
            assert f"X-Reqid: {envelope['request_id']}".encode() in head, name
        code, log = await stop(served)
    assert code == 0, log
    assert signature not in log and "Traceback" not in log, log
    # At most one line per rejected request, naming the kind of error only.
    after_start = log.split("listening on", 1)[1].splitlines()[1:]
    rejected = [line for line in after_start if "rejected a malformed HTTP request" in line]
    assert rejected and len(rejected) <= len(bad_requests), log
    assert all(line in rejected or "shutting down" in line for line in after_start), log


async def test_zero_turns_either_timeout_off() -> None:
    request = b"GET /client/user/profile HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    loop = asyncio.get_running_loop()
    for header_timeout, idle_timeout in ((0.0, 0.6), (0.5, 0.0)):
        limits = {"header_timeout": header_timeout, "idle_timeout": idle_timeout}
        settings = make_settings({"limits": limits, "server": {"port": 0}})
        runner = await start_http_server(create_app(settings), settings)
        port = int(runner.addresses[0][1])
        raw = await Raw.open(port)
        try:
            if idle_timeout:
                # No header timeout: a silent connection lasts until the idle timeout.
                opened = loop.time()
                assert await asyncio.wait_for(raw.until_closed(), idle_timeout + GRACE) == b""
                assert loop.time() - opened >= idle_timeout - 0.1
            else:
                # No idle timeout (aiohttp's own 0 would close right after each answer).
                for _ in range(2):
                    assert await raw.send(request)
                    assert (await raw.response())[0] == 401
                    await asyncio.sleep(0.1)
        finally:
            raw.close()
            await runner.cleanup()
