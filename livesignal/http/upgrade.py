"""Recognising a `/ws` WebSocket upgrade in a raw HTTP request head (RFC 6455 §4.2), sans I/O.

The HTTP server (server.py) holds back a request head that may be `GET /ws` until it is whole,
then asks `parse_upgrade(head)`. Anything else (another path, another method, a head that does
not ask to upgrade, or that announces a body) is None: aiohttp serves it as any HTTP request
(the `/ws` route then refuses it with the same rules as before). An upgrade is handed, with its
transport, to whoever the app names to take it (appkeys.WS_UPGRADES): the socket transport.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

WS_PATH = "/ws"
MAX_HEAD = 16 * 1024  # an upgrade head longer than this is left to aiohttp (and its limits)
_REQUEST_PREFIXES = (b"GET /ws ", b"GET /ws?")


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    target: str  # path and query as sent
    headers: dict[str, str]  # lower-case names; a repeated header's values joined by ", "

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def query(self, name: str) -> str | None:
        _, _, query = self.target.partition("?")
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == name:
                return value
        return None

    def problem(self) -> str | None:
        """Why this is not a valid RFC 6455 handshake; None when it is."""
        if "websocket" not in _tokens(self.header("upgrade")):
            return "Upgrade: websocket is required"
        if "upgrade" not in _tokens(self.header("connection")):
            return "Connection: Upgrade is required"
        try:
            key = base64.b64decode(self.header("sec-websocket-key") or "", validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 16:
            return "Sec-WebSocket-Key must be 16 bytes in base64"
        return None

    def version_ok(self) -> bool:
        return self.header("sec-websocket-version") == "13"


# Given a connection whose request head is a /ws upgrade, and the bytes that followed the head:
# True when it takes the connection over (the HTTP server then lets go of it).
UpgradeTaker = Callable[[asyncio.Transport, UpgradeRequest, bytes], bool]


def might_be_upgrade(start: bytes) -> bool:
    """Whether a connection's first bytes may begin a `/ws` request (wait for the head)."""
    probe = start[:8]
    return any(prefix.startswith(probe) or probe.startswith(prefix) for prefix in _REQUEST_PREFIXES)


def parse_upgrade(head: bytes) -> UpgradeRequest | None:
    """The `/ws` upgrade in `head` (request line to blank line), or None if it is none."""
    if not head.startswith(_REQUEST_PREFIXES):
        return None
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        return None
    target = parts[1]
    if target.split("?", 1)[0] != WS_PATH:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or any(c in name for c in " \t"):
            return None  # malformed: aiohttp answers it
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "websocket" not in _tokens(headers.get("upgrade")):
        return None
    if "content-length" in headers or "transfer-encoding" in headers:
        return None
    return UpgradeRequest(target, headers)


def _tokens(value: str | None) -> set[str]:
    return {token.strip().lower() for token in (value or "").split(",")}
