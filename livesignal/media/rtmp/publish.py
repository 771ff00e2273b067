"""A minimal RTMP publishing client on a blocking socket, for the rtc2rtmp push thread.

Why not PyAV's own RTMP output: PyAV opens an output URL (ffmpeg's RTMP handshake and
`publish`) while holding the GIL. nginx-rtmp answers `publish` only after its on_publish
callback, which this same process serves, so the handshake would wait on an event loop it
is blocking. Here PyAV only muxes FLV into memory (`FlvTagReader`) and the tags go out on a
Python socket, whose blocking calls release the GIL.

Scope: the plain (unsigned) handshake, `connect`, `createStream`, `publish`, then FLV tags
as RTMP messages; server pings are answered. That is what nginx-rtmp and other origin
servers accept from encoders; rtmps:// is not supported.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

HANDSHAKE_SIZE = 1536
OUT_CHUNK_SIZE = 4096
DEFAULT_PORT = 1935

# message types
SET_CHUNK_SIZE = 1
USER_CONTROL = 4
AUDIO = 8
VIDEO = 9
DATA_AMF0 = 18
COMMAND_AMF0 = 20

# chunk stream ids, one per kind of message so their headers never interleave
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_DATA = 5
CSID_AUDIO = 4
CSID_VIDEO = 6
_TAG_CSID = {AUDIO: CSID_AUDIO, VIDEO: CSID_VIDEO, DATA_AMF0: CSID_DATA}

PING_REQUEST = 6
PING_RESPONSE = 7


class RtmpError(Exception):
    """The server refused or dropped the session."""


# --- AMF0 -------------------------------------------------------------------------------------


def amf_encode(value: Any) -> bytes:
    if value is None:
        return b"\x05"
    if isinstance(value, bool):
        return b"\x01" + (b"\x01" if value else b"\x00")
    if isinstance(value, int | float):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) < 0x10000:
            return b"\x02" + struct.pack(">H", len(raw)) + raw
        return b"\x0c" + struct.pack(">I", len(raw)) + raw
    if isinstance(value, dict):
        body = b"".join(_amf_key(k) + amf_encode(v) for k, v in value.items())
        return b"\x03" + body + b"\x00\x00\x09"
    raise TypeError(f"cannot AMF0-encode {type(value).__name__}")


def _amf_key(key: str) -> bytes:
    raw = key.encode()
    return struct.pack(">H", len(raw)) + raw


def amf_decode_all(data: bytes) -> list[Any]:
    values: list[Any] = []
    pos = 0
    while pos < len(data):
        value, pos = _amf_decode(data, pos)
        values.append(value)
    return values


def _amf_decode(data: bytes, pos: int) -> tuple[Any, int]:
    marker = data[pos]
    pos += 1
    if marker == 0x00:
        return struct.unpack_from(">d", data, pos)[0], pos + 8
    if marker == 0x01:
        return data[pos] != 0, pos + 1
    if marker == 0x02:
        (length,) = struct.unpack_from(">H", data, pos)
        return data[pos + 2 : pos + 2 + length].decode(errors="replace"), pos + 2 + length
    if marker == 0x0C:
        (length,) = struct.unpack_from(">I", data, pos)
        return data[pos + 4 : pos + 4 + length].decode(errors="replace"), pos + 4 + length
    if marker in (0x03, 0x08):  # object, ECMA array
        if marker == 0x08:
            pos += 4  # advisory count
        result: dict[str, Any] = {}
        while True:
            (length,) = struct.unpack_from(">H", data, pos)
            key = data[pos + 2 : pos + 2 + length].decode(errors="replace")
            pos += 2 + length
            if not key and data[pos] == 0x09:
                return result, pos + 1
            result[key], pos = _amf_decode(data, pos)
    if marker == 0x0A:  # strict array
        (count,) = struct.unpack_from(">I", data, pos)
        pos += 4
        items = []
        for _ in range(count):
            item, pos = _amf_decode(data, pos)
            items.append(item)
        return items, pos
    if marker == 0x0B:  # date: double + timezone
        return struct.unpack_from(">d", data, pos)[0], pos + 10
    if marker in (0x05, 0x06):  # null, undefined
        return None, pos
    raise RtmpError(f"unsupported AMF0 marker 0x{marker:02x}")


# --- URL --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtmpUrl:
    host: str
    port: int
    app: str
    stream: str  # the publish name, its query (signature) included
    tc_url: str


def parse_rtmp_url(url: str) -> RtmpUrl:
    """rtmp://host[:port]/app/stream[?query] (the app is the first path segment)."""
    parts = urlsplit(url)
    if parts.scheme != "rtmp" or not parts.hostname:
        raise ValueError(f"not an rtmp:// URL: {url.split('?', 1)[0]}")
    path = parts.path.lstrip("/")
    app, _, stream = path.partition("/")
    if not app or not stream:
        raise ValueError("an RTMP URL needs /<app>/<stream>")
    if parts.query:
        stream += "?" + parts.query
    port = parts.port or DEFAULT_PORT
    return RtmpUrl(parts.hostname, port, app, stream, f"rtmp://{parts.netloc}/{app}")


# --- FLV in memory ------------------------------------------------------------------------------


class FlvTagReader:
    """A write-only file for PyAV's FLV muxer; hands every complete tag to `on_tag`."""

    def __init__(self, on_tag: Callable[[int, int, bytes], None]) -> None:
        self._on_tag = on_tag
        self._buffer = bytearray()
        self._header_seen = False

    def write(self, data: bytes) -> int:
        self._buffer += data
        if not self._header_seen:
            if len(self._buffer) < 13:  # "FLV", version, flags, header size, PreviousTagSize0
                return len(data)
            if self._buffer[:3] != b"FLV":
                raise RtmpError("the muxer did not produce FLV")
            header_size = int.from_bytes(self._buffer[5:9], "big")
            del self._buffer[: header_size + 4]
            self._header_seen = True
        while len(self._buffer) >= 11:
            size = int.from_bytes(self._buffer[1:4], "big")
            total = 11 + size + 4
            if len(self._buffer) < total:
                break
            tag_type = self._buffer[0] & 0x1F
            timestamp = int.from_bytes(self._buffer[4:7], "big") | (self._buffer[7] << 24)
            payload = bytes(self._buffer[11 : 11 + size])
            del self._buffer[:total]
            self._on_tag(tag_type, timestamp, payload)
        return len(data)


# --- the client -------------------------------------------------------------------------------


@dataclass
class _Inbound:
    """Per-chunk-stream state of messages coming from the server."""

    length: int = 0
    type_id: int = 0
    extended: bool = False
    remaining: int = 0
    buffer: bytearray | None = None


class RtmpPublisher:
    PING_CHECK_INTERVAL = 0.5

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = parse_rtmp_url(url)
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._in_chunk_size = 128
        self._inbound: dict[int, _Inbound] = {}
        self._stream_id = 0
        self._last_poll = 0.0
        self.bytes_sent = 0

    # connection ------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect and publish; RtmpError if the server refuses (e.g. a bad signature)."""
        sock = socket.create_connection((self.url.host, self.url.port), timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        try:
            self._handshake()
            self._send(CSID_CONTROL, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", OUT_CHUNK_SIZE))
            self._command(
                "connect",
                1,
                {
                    "app": self.url.app,
                    "type": "nonprivate",
                    "flashVer": "FMLE/3.0 (compatible; livesignal)",
                    "tcUrl": self.url.tc_url,
                },
            )
            self._await_result(1)
            self._command("createStream", 2, None)
            result = self._await_result(2)
            self._stream_id = int(result[3]) if len(result) > 3 else 1
            self._command("publish", 3, None, self.url.stream, "live", stream_id=self._stream_id)
            self._await_status("NetStream.Publish.Start")
        except BaseException:
            self.close()
            raise

    def _handshake(self) -> None:
        # Version 0 in C1 asks for the original, digest-free handshake.
        c1 = struct.pack(">II", 0, 0) + os.urandom(HANDSHAKE_SIZE - 8)
        self._sendall(b"\x03" + c1)
        s0 = self._read(1)
        if s0 != b"\x03":
            raise RtmpError(f"unexpected RTMP version {s0!r}")
        s1 = self._read(HANDSHAKE_SIZE)
        self._read(HANDSHAKE_SIZE)  # S2 (echo of C1)
        self._sendall(s1)  # C2

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            if self._stream_id:
                self._sock = sock
                self._command("deleteStream", 0, None, self._stream_id)
                self._sock = None
        except OSError:
            pass
        finally:
            sock.close()

    # media -----------------------------------------------------------------------------------

    def send_tag(self, tag_type: int, timestamp: int, payload: bytes) -> None:
        """Send one FLV tag (audio 8, video 9, script data 18) as an RTMP message."""
        csid = _TAG_CSID.get(tag_type)
        if csid is None:
            return
        if tag_type == DATA_AMF0:
            # Published metadata is addressed to the server as "@setDataFrame".
            payload = amf_encode("@setDataFrame") + payload
        self._send(csid, tag_type, self._stream_id, timestamp, payload)
        self._poll()

    def _poll(self) -> None:
        """Answer whatever the server sent meanwhile (pings), without blocking."""
        now = time.monotonic()
        if now - self._last_poll < self.PING_CHECK_INTERVAL or self._sock is None:
            return
        self._last_poll = now
        while select.select([self._sock], [], [], 0)[0]:
            self._handle(*self._recv_message())

    # framing ---------------------------------------------------------------------------------

    def _sendall(self, data: bytes) -> None:
        if self._sock is None:
            raise RtmpError("not connected")
        self._sock.sendall(data)
        self.bytes_sent += len(data)

    def _read(self, size: int) -> bytes:
        if self._sock is None:
            raise RtmpError("not connected")
        data = bytearray()
        while len(data) < size:
            chunk = self._sock.recv(size - len(data))
            if not chunk:
                raise RtmpError("the server closed the connection")
            data += chunk
        return bytes(data)

    def _send(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
    ) -> None:
        timestamp &= 0xFFFFFFFF
        extended = timestamp >= 0xFFFFFF
        header = bytes([csid]) + (0xFFFFFF if extended else timestamp).to_bytes(3, "big")
        header += len(payload).to_bytes(3, "big") + bytes([type_id])
        header += struct.pack("<I", stream_id)
        ext = struct.pack(">I", timestamp) if extended else b""
        parts = [header, ext, payload[:OUT_CHUNK_SIZE]]
        for start in range(OUT_CHUNK_SIZE, len(payload), OUT_CHUNK_SIZE):
            parts += [bytes([0xC0 | csid]), ext, payload[start : start + OUT_CHUNK_SIZE]]
        self._sendall(b"".join(parts))

    def _recv_message(self) -> tuple[int, bytes]:
        """The next complete message from the server: (type id, payload)."""
        while True:
            first = self._read(1)[0]
            fmt, csid = first >> 6, first & 0x3F
            if csid == 0:
                csid = 64 + self._read(1)[0]
            elif csid == 1:
                low, high = self._read(2)
                csid = 64 + low + high * 256
            state = self._inbound.setdefault(csid, _Inbound())
            if fmt <= 2:
                stamp = int.from_bytes(self._read(3), "big")
                if fmt <= 1:
                    state.length = int.from_bytes(self._read(3), "big")
                    state.type_id = self._read(1)[0]
                if fmt == 0:
                    self._read(4)  # message stream id
                state.extended = stamp == 0xFFFFFF
            if state.extended:
                self._read(4)
            if state.remaining == 0:
                state.remaining = state.length
                state.buffer = bytearray()
            assert state.buffer is not None
            piece = self._read(min(self._in_chunk_size, state.remaining))
            state.buffer += piece
            state.remaining -= len(piece)
            if state.remaining == 0:
                message = bytes(state.buffer)
                state.buffer = None
                if state.type_id == SET_CHUNK_SIZE and len(message) >= 4:
                    self._in_chunk_size = struct.unpack(">I", message[:4])[0] & 0x7FFFFFFF
                return state.type_id, message

    def _handle(self, type_id: int, payload: bytes) -> list[Any] | None:
        """Answer control messages; decoded values of a command message, else None."""
        if type_id == USER_CONTROL and len(payload) >= 6:
            (event,) = struct.unpack(">H", payload[:2])
            if event == PING_REQUEST:
                response = struct.pack(">H", PING_RESPONSE) + payload[2:6]
                self._send(CSID_CONTROL, USER_CONTROL, 0, 0, response)
            return None
        if type_id == COMMAND_AMF0:
            return amf_decode_all(payload)
        return None

    # commands --------------------------------------------------------------------------------

    def _command(self, name: str, transaction: int, *args: Any, stream_id: int = 0) -> None:
        payload = amf_encode(name) + amf_encode(transaction) + b"".join(amf_encode(a) for a in args)
        self._send(CSID_COMMAND, COMMAND_AMF0, stream_id, 0, payload)

    def _next_command(self) -> list[Any]:
        while True:
            values = self._handle(*self._recv_message())
            if values:
                return values

    def _await_result(self, transaction: int) -> list[Any]:
        while True:
            values = self._next_command()
            name = values[0]
            if name == "_error":
                raise RtmpError(f"server error: {_description(values)}")
            if name == "_result" and len(values) > 1 and values[1] == transaction:
                return values

    def _await_status(self, code: str) -> None:
        while True:
            values = self._next_command()
            if values[0] == "_error":
                raise RtmpError(f"server error: {_description(values)}")
            if values[0] != "onStatus":
                continue
            info = next((v for v in values[2:] if isinstance(v, dict)), {})
            if info.get("code") == code:
                return
            if info.get("level") == "error":
                raise RtmpError(f"{info.get('code')}: {info.get('description', '')}")


def _description(values: list[Any]) -> str:
    info = next((v for v in values[2:] if isinstance(v, dict)), {})
    return str(info.get("description") or info.get("code") or values)
