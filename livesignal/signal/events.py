"""Event names and the event record that the broker carries to sockets (PROTOCOL §4.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from livesignal.signal.protocol import text_wire

# Room events: to every socket joined to the room, with a per-room seq.
MEMBER_JOINED = "member.joined"
MEMBER_LEFT = "member.left"
ROOM_STARTED = "room.started"
ROOM_STOPPED = "room.stopped"
ROOM_DELETED = "room.deleted"
ROOM_EXTENDS = "room.extends"
ANCHOR_OFFLINE = "anchor.offline"
ANCHOR_ONLINE = "anchor.online"
CHAT_MESSAGE = "chat.message"
PK_STATE = "pk.state"

# User-directed events: to every socket of one user, no live_id, no seq.
RELAY_INVITED = "relay.invited"
RELAY_ACCEPTED = "relay.accepted"
RELAY_REJECTED = "relay.rejected"
RELAY_CANCELED = "relay.canceled"
RELAY_TIMEOUT = "relay.timeout"

# member.left reasons
LEFT_LEAVE = "leave"
LEFT_TIMEOUT = "timeout"
LEFT_SWITCHED = "switched"


@dataclass(frozen=True, slots=True)
class RoomEvent:
    live_id: str
    seq: int
    name: str
    data: dict[str, Any]
    published_at: float
    frame: str  # the event frame as clients receive it
    wire: bytes  # that frame as a WebSocket text frame, built once for every socket


def room_event(live_id: str, seq: int, name: str, data: dict[str, Any], at: float) -> RoomEvent:
    frame = orjson.dumps(
        {"type": "event", "event": name, "live_id": live_id, "seq": seq, "data": data}
    ).decode()
    return RoomEvent(
        live_id=live_id,
        seq=seq,
        name=name,
        data=data,
        published_at=at,
        frame=frame,
        wire=text_wire(frame),
    )


@dataclass(frozen=True, slots=True)
class UserEvent:
    user_id: str
    name: str
    data: dict[str, Any]
    frame: str  # the event frame as clients receive it
    wire: bytes


def user_event(user_id: str, name: str, data: dict[str, Any]) -> UserEvent:
    frame = orjson.dumps({"type": "event", "event": name, "data": data}).decode()
    return UserEvent(user_id=user_id, name=name, data=data, frame=frame, wire=text_wire(frame))
