"""What the raw load generator writes and looks for, per family of servers (its dialects).

The load generator speaks WebSocket itself, with the fewest bytes parsed: it counts one
marker per delivered chat message in the byte stream, answers the server's pings, and sends
masked client frames it builds here. livesignal (PROTOCOL §4) and socket.io (Engine.IO v4
over the websocket transport) differ only in the frames below.
"""

from __future__ import annotations

import time

import orjson

MASK = b"\x01\x02\x03\x04"
STAMP_PREFIX = b"@@T"
PAD = "x" * 64


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client-to-server frame (RFC 6455 §5.2)."""
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    else:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    return header + MASK + masked


def upgrade_request(port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def stamp_text() -> str:
    """A chat text carrying its send time. CLOCK_MONOTONIC is system-wide on Linux, so the
    receiving process can subtract it from its own clock."""
    return f"@@T{time.monotonic():.6f}@@ {PAD}"


# One step of a socket's set-up: (frame to send, what acknowledges it, what means it failed).
Step = tuple[bytes, bytes, bytes | None]


class Livesignal:
    """livesignal's /ws: a token in the query; room.join (or room.start by an admin, which
    subscribes without membership); chat.send; RFC 6455 pings."""

    name = "livesignal"
    marker = b'"event":"chat.message"'
    ping = b"\x89\x00"  # the server's ping frame, empty payload
    pong = client_frame(b"", 0xA)

    def path(self, user: str, admin: bool = False) -> str:
        from bench.common import token

        return f"/ws?token={token(user, 'admin' if admin else '')}"

    def steps(self, room: str, admin: bool = False) -> list[Step]:
        op = "room.start" if admin else "room.join"
        frame = orjson.dumps({"id": 1, "type": op, "data": {"live_id": room}})
        return [(client_frame(frame), b'"id":1,"type":"reply","code":0', b'"id":1,"type":"reply"')]

    def chat(self, room: str, text: str) -> bytes:
        frame = {"id": 2, "type": "chat.send", "data": {"live_id": room, "text": text}}
        return client_frame(orjson.dumps(frame))


class SocketIO:
    """socket.io 4 (Node or python-socketio): the default namespace, then an acknowledged
    "join" to a socket.io room; "chat" [room, text] is broadcast to that room; Engine.IO's
    ping is the text packet "2", answered "3"."""

    name = "socketio"
    marker = b'42["chat"'
    ping = b"\x81\x012"
    pong = client_frame(b"3")

    def path(self, user: str, admin: bool = False) -> str:
        return "/socket.io/?EIO=4&transport=websocket"

    def steps(self, room: str, admin: bool = False) -> list[Step]:
        # Node socket.io drops a socket that emits before its namespace connect is complete:
        # wait for the connect reply before the join.
        join = b"421" + orjson.dumps(["join", room])
        return [(client_frame(b"40"), b"40{", None), (client_frame(join), b'431["ok"]', None)]

    def chat(self, room: str, text: str) -> bytes:
        return client_frame(b"42" + orjson.dumps(["chat", room, text]))


Dialect = Livesignal | SocketIO
