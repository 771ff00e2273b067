"""The opening handshake of `/ws` (RFC 6455 §4.2), sans I/O: the 101 answer, or a refusal.

The HTTP server recognises the upgrade (livesignal/http/upgrade.py); the socket transport
decides it and answers with these bytes on the handed-over connection.
"""

from __future__ import annotations

import base64
import hashlib
from http import HTTPStatus

import orjson

from livesignal.http.upgrade import UpgradeRequest

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324


def switching_protocols(request: UpgradeRequest) -> bytes:
    """The 101 answer accepting the upgrade."""
    accept = accept_key(request.header("sec-websocket-key") or "")
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode()


def refusal(status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> bytes:
    """A plain HTTP answer refusing the upgrade; the connection closes after it."""
    payload = orjson.dumps(body)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
