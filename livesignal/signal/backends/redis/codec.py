"""Records as JSON for Redis, and back: pure functions, no I/O.

A room's pv and uv are counters kept beside the record (so that joins, which count them, do
not conflict with each other on the room record); `version` is the store's, not the record's.
"""

from __future__ import annotations

from typing import Any

import orjson

from livesignal.signal.model.records import Member, Relay, RelayStatus, Room, RoomStatus, User


def dump_user(user: User) -> bytes:
    return orjson.dumps({"i": user.im_userid, "n": user.nick, "a": user.avatar, "e": user.extends})


def load_user(user_id: str, raw: bytes) -> User:
    d = orjson.loads(raw)
    return User(user_id=user_id, im_userid=d["i"], nick=d["n"], avatar=d["a"], extends=d["e"])


_ROOM_FIELDS = (
    "title",
    "anchor_id",
    "chat_id",
    "created_at",
    "notice",
    "cover_url",
    "extends",
    "scheduled_start",
    "scheduled_end",
    "publish_expire_at",
    "started_at",
    "ended_at",
    "create_order",
    "start_order",
    "anchor_absent_since",
    "relay_id",
)


def dump_room(room: Room) -> bytes:
    fields: dict[str, Any] = {name: getattr(room, name) for name in _ROOM_FIELDS}
    fields["status"] = int(room.status)
    return orjson.dumps(fields)


def load_room(live_id: str, raw: bytes, version: int, pv: int, uv: int) -> Room:
    d = orjson.loads(raw)
    status = RoomStatus(d.pop("status"))
    return Room(live_id=live_id, status=status, version=version, pv=pv, uv=uv, **d)


_RELAY_FIELDS = (
    "init_user_id",
    "init_room_id",
    "recv_room_id",
    "recv_user_id",
    "created_at",
    "started_at",
    "stopped_at",
    "extends",
    "reason",
)


def dump_relay(relay: Relay) -> bytes:
    fields: dict[str, Any] = {name: getattr(relay, name) for name in _RELAY_FIELDS}
    fields["status"] = int(relay.status)
    return orjson.dumps(fields)


def load_relay(relay_id: str, raw: bytes, version: int) -> Relay:
    d = orjson.loads(raw)
    status = RelayStatus(d.pop("status"))
    return Relay(relay_id=relay_id, status=status, version=version, **d)


def dump_member(member: Member) -> bytes:
    return orjson.dumps({"r": member.rest_deadline, "h": member.holds, "o": member.join_order})


def load_member(live_id: str, user_id: str, raw: bytes) -> Member:
    d = orjson.loads(raw)
    return Member(user_id, live_id, rest_deadline=d["r"], holds=d["h"], join_order=d["o"])


def pair(live_id: str, user_id: str) -> str:
    """A (room, user) pair as one set member: JSON, whatever characters a user id holds."""
    return orjson.dumps([live_id, user_id]).decode()


def unpair(raw: bytes | str) -> tuple[str, str]:
    live_id, user_id = orjson.loads(raw)
    return str(live_id), str(user_id)
