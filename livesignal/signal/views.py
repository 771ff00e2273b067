"""The JSON shapes clients see: user, room and relay objects (PROTOCOL §2, §3.2, §3.5)."""

from __future__ import annotations

from typing import Any

from livesignal.signal.clock import format_china_time
from livesignal.signal.model import Relay, Room, User


def user_view(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "im_userid": user.im_userid,
        "im_username": user.user_id,
        "nick": user.nick,
        "avatar": user.avatar,
        "extends": user.extends,
    }


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
) -> dict[str, Any]:
    return {
        "live_id": room.live_id,
        "title": room.title,
        "notice": room.notice,
        "cover_url": room.cover_url,
        "extends": room.extends,
        "anchor_info": user_view(anchor),
        "anchor_status": 1 if anchor_present else 0,
        "pk_id": pk_id,
        "online_count": online_count,
        "start_time": _time_or_schedule(room.started_at, room.scheduled_start),
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


def relay_view(relay: Relay) -> dict[str, Any]:
    return {
        "sid": relay.relay_id,
        "init_user_id": relay.init_user_id,
        "init_room_id": relay.init_room_id,
        "recv_room_id": relay.recv_room_id,
        "recv_user_id": relay.recv_user_id,
        "status": int(relay.status),
        "start_at": format_china_time(relay.started_at),
        "stop_at": format_china_time(relay.stopped_at),
        "extends": relay.extends,
        "reason": relay.reason,
    }
