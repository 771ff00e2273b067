"""The JSON shapes clients see: user, room and relay objects (PROTOCOL §2, §3.2, §3.5)."""

from __future__ import annotations

from typing import Any

from livesignal.signal.model.clock import format_china_time
from livesignal.signal.model.records import Relay, Room, RoomStatus, User


def user_view(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "im_userid": user.im_userid,
        "im_username": user.user_id,
        "nick": user.nick,
        "avatar": user.avatar,
        "extends": user.extends,
    }


def start_time(room: Room) -> int:
    """A room's `start_time`: when it went live, else when it is scheduled to (0: neither)."""
    return _time_or_schedule(room.started_at, room.scheduled_start)


def _time_or_schedule(actual: float | None, scheduled: int | None) -> int:
    if actual is not None:
        return int(actual)
    return scheduled or 0


def room_view(
    room: Room,
    *,
    anchor: User,
    anchor_present: bool,
    online_count: int,
    pk_id: str,
    push_url: str,
    rtmp_url: str,
    flv_url: str,
    hls_url: str,
    sdk_fields: bool = False,
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "live_id": room.live_id,
        "title": room.title,
        "notice": room.notice,
        "cover_url": room.cover_url,
        "extends": room.extends,
        "anchor_info": user_view(anchor),
        "anchor_status": 1 if anchor_present else 0,
        "pk_id": pk_id,
        "online_count": online_count,
        "start_time": start_time(room),
        "end_time": _time_or_schedule(room.ended_at, room.scheduled_end),
        "chat_id": room.chat_id,
        "push_url": push_url,
        "hls_url": hls_url,
        "rtmp_url": rtmp_url,
        "flv_url": flv_url,
        "pv": room.pv,
        "uv": room.uv,
        "live_status": int(room.status),
    }
    if sdk_fields:
        # What the original SDKs read beyond the documents: everyone who ever joined, and
        # the anchors publishing in the room (its own, and the partner's during a PK).
        view["total_count"] = room.uv
        view["total_mics"] = (1 + (1 if pk_id else 0)) if room.status == RoomStatus.LIVE else 0
    return view


def _relay_time(unix: float | None, unix_times: bool) -> str | int | None:
    """The documents' "YYYY-MM-DD HH:MM:SS" (UTC+8) or "", or, as the original deployment
    sent them (compat.profile = "original"), unix seconds or null."""
    if unix_times:
        return int(unix) if unix is not None else None
    return format_china_time(unix)


def relay_view(relay: Relay, *, unix_times: bool = False) -> dict[str, Any]:
    """`unix_times`: compat.profile "original": times as unix seconds, plus created_at."""
    view: dict[str, Any] = {
        "sid": relay.relay_id,
        "init_user_id": relay.init_user_id,
        "init_room_id": relay.init_room_id,
        "recv_room_id": relay.recv_room_id,
        "recv_user_id": relay.recv_user_id,
        "status": int(relay.status),
        "start_at": _relay_time(relay.started_at, unix_times),
        "stop_at": _relay_time(relay.stopped_at, unix_times),
        "extends": relay.extends,
        "reason": relay.reason,
    }
    if unix_times:
        view["created_at"] = _relay_time(relay.created_at, unix_times)
    return view
