"""The WebSocket frame protocol (PROTOCOL §4.1), sans I/O: parse client frames, build replies.

Nothing here touches a socket, so every rule is testable by feeding strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from livesignal.signal.model.errors import ApiError
from livesignal.signal.model.events import RoomEvent, UserEvent
from livesignal.signal.ws.frames import OP_TEXT, encode_frame

RequestId = int | str | None
MAX_ID_LENGTH = 128

# Close codes (4000-4999 are ours).
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003  # binary frame
CLOSE_TOO_BIG = 1009
CLOSE_LOST_EVENTS = 1012  # the node lost events it cannot replay: reconnect and resume
CLOSE_TOKEN_EXPIRED = 4001
CLOSE_HEARTBEAT_TIMEOUT = 4008
CLOSE_SLOW_CONSUMER = 4009

MAX_FRAME = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AppPing:
    """`{"type": "ping"}`: answered with `{"type": "pong"}` and nothing else."""


@dataclass(frozen=True, slots=True)
class Malformed:
    id: RequestId  # None when the frame was unreadable
    message: str


Frame = Request | AppPing | Malformed

PONG_FRAME = '{"type":"pong"}'


def parse_frame(text: str) -> Frame:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Malformed(None, "frame is not valid JSON")
    if not isinstance(value, dict):
        return Malformed(None, "frame must be a JSON object")
    kind = value.get("type")
    if kind == "ping":
        return AppPing()  # answered with a pong and nothing else, whatever else it carries
    request_id = value.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return Malformed(None, "id must be an integer or a string")
    if isinstance(request_id, str) and len(request_id) > MAX_ID_LENGTH:
        return Malformed(None, f"id must be at most {MAX_ID_LENGTH} characters")
    if not isinstance(kind, str) or not kind:
        return Malformed(request_id, "type must be a non-empty string")
    data = value.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return Malformed(request_id, "data must be a JSON object")
    return Request(request_id, kind, data)


def reply_frame(request_id: RequestId, data: Any) -> str:
    body = {"id": request_id, "type": "reply", "code": 0, "message": "success", "data": data}
    return orjson.dumps(body).decode()


def error_frame(request_id: RequestId, error: ApiError) -> str:
    body = {
        "id": request_id,
        "type": "reply",
        "code": error.code,
        "message": error.message,
        "data": None,
    }
    return orjson.dumps(body).decode()


def room_event_wire(event: RoomEvent) -> bytes:
    """A room event as the wire frame every socket of the room gets (built once per node)."""
    body = {
        "type": "event",
        "event": event.name,
        "live_id": event.live_id,
        "seq": event.seq,
        "data": event.data,
    }
    return encode_frame(OP_TEXT, orjson.dumps(body))


def user_event_wire(event: UserEvent) -> bytes:
    """A user-directed event: no live_id, no seq."""
    return encode_frame(
        OP_TEXT, orjson.dumps({"type": "event", "event": event.name, "data": event.data})
    )


def welcome_frame(
    session_id: str, user_id: str, heartbeat_interval: float, heartbeat_timeout: float
) -> str:
    data = {
        "session_id": session_id,
        "user_id": user_id,
        "heartbeat_interval": heartbeat_interval,
        "heartbeat_timeout": heartbeat_timeout,
    }
    return orjson.dumps({"type": "welcome", "data": data}).decode()
