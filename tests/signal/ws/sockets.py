"""Sockets without a network, for tests of the socket layer on a manual clock.

`FakeTransport` stands in for the asyncio transport the HTTP server hands over: it records
what the server writes, can pretend its send buffer is full, and says how it was ended.
`client_frame` builds a masked client frame; `server_frames` reads what the server wrote.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import orjson

from livesignal.http.upgrade import UpgradeRequest, parse_upgrade
from livesignal.signal.ws.frames import OP_CLOSE, OP_TEXT


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: str = "127.0.0.1") -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0  # write() calls: coalescing makes fewer
        self.buffered = 0  # what get_write_buffer_size() reports: a peer that stopped reading
        self.closed = False  # close(): ends once the buffer is written
        self.aborted = False  # abort(): cut at once
        self.reading = True
        self._peer = peer
        self._protocol: asyncio.BaseProtocol | None = None

    # --- what the server calls -------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self._peer, 50000)
        if name == "sockname":
            return ("127.0.0.1", 8080)
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    # --- what the test reads -----------------------------------------------------------------
    def take(self) -> bytes:
        """What was written since the last take."""
        data, self.written = bytes(self.written), bytearray()
        return data


def upgrade_request(token: str) -> UpgradeRequest:
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /ws?token={token} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    request = parse_upgrade(head)
    assert request is not None
    return request


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client-to-server frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def client_text(value: Any) -> bytes:
    return client_frame(OP_TEXT, orjson.dumps(value))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The unmasked server frames in `data` (after any HTTP head), as (opcode, payload)."""
    if data.startswith(b"HTTP/1.1"):
        data = data[data.index(b"\r\n\r\n") + 4 :]
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        frames.append((opcode, data[start : start + length]))
        data = data[start + length :]
    return frames


def texts(data: bytes) -> list[dict[str, Any]]:
    """The JSON text frames in `data`."""
    return [orjson.loads(payload) for opcode, payload in server_frames(data) if opcode == OP_TEXT]


def close_code(data: bytes) -> int | None:
    """The code of the close frame in `data`, if there is one."""
    for opcode, payload in server_frames(data):
        if opcode == OP_CLOSE:
            return int.from_bytes(payload[:2], "big")
    return None
