"""Helpers for the REST tests: room set-up, error assertions and signatures computed by hand.

The signing helpers here re-implement PROTOCOL §2/§3.4 from the formulas with hashlib/hmac/
base64 only, never through livesignal.signal.model.auth, so the tests check the server against the
contract and not against itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.conftest import Harness, Reply

ROOM_FIELDS = {
    "live_id",
    "title",
    "notice",
    "cover_url",
    "extends",
    "anchor_info",
    "anchor_status",
    "pk_id",
    "online_count",
    "start_time",
    "end_time",
    "chat_id",
    "push_url",
    "hls_url",
    "rtmp_url",
    "flv_url",
    "pv",
    "uv",
    "live_status",
}
USER_FIELDS = {"user_id", "im_userid", "im_username", "nick", "avatar", "extends"}
RELAY_FIELDS = {
    "sid",
    "init_user_id",
    "init_room_id",
    "recv_room_id",
    "recv_user_id",
    "status",
    "start_at",
    "stop_at",
    "extends",
    "reason",
}
PAGE_FIELDS = {"total_count", "page_total", "end_page", "list"}

CST = timezone(timedelta(hours=8))


def china_time(unix: float) -> str:
    """'YYYY-MM-DD HH:MM:SS' in UTC+8, formatted independently of the server."""
    return datetime.fromtimestamp(int(unix), CST).strftime("%Y-%m-%d %H:%M:%S")


def b64(raw: bytes) -> str:
    """URL-safe base64 WITH padding (PROTOCOL §2)."""
    return base64.urlsafe_b64encode(raw).decode()


def hmac_sha1_b64(key: str, message: str | bytes) -> str:
    data = message.encode() if isinstance(message, str) else message
    return b64(hmac.new(key.encode(), data, hashlib.sha1).digest())


def assert_ok(reply: Reply) -> Any:
    assert reply.status == 200, reply.body
    assert reply.code == 0, reply.body
    assert reply.body["message"] == "success"
    return reply.data


def assert_error(reply: Reply, http_status: int, code: int | None = None) -> None:
    """An error in the §3.1 envelope: no data, a readable message, no traceback."""
    expected_code = http_status if code is None else code
    assert (reply.status, reply.body.get("code")) == (http_status, expected_code), reply.body
    assert set(reply.body) >= {"request_id", "code", "message"}, reply.body
    assert reply.body.get("data") is None, reply.body
    message = reply.body["message"]
    assert isinstance(message, str) and message
    assert "Traceback" not in message


async def create_room(h: Harness, anchor: str, **fields: Any) -> dict[str, Any]:
    body = {"title": f"{anchor}'s room", **fields}
    data: dict[str, Any] = assert_ok(
        await h.call("POST", "/client/live/room/instance", anchor, json=body)
    )
    return data


async def live_room(h: Harness, anchor: str, **fields: Any) -> str:
    """A room created and started by `anchor`: live, anchor present. Returns its live_id."""
    live_id: str = (await create_room(h, anchor, **fields))["live_id"]
    assert_ok(await h.call("PUT", f"/client/live/room/{live_id}", anchor))
    return live_id


async def info(h: Harness, live_id: str, viewer: str = "observer") -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(
        await h.call("GET", f"/client/live/room/info/{live_id}", viewer)
    )
    return data


async def join(h: Harness, user: str, live_id: str) -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(
        await h.call("POST", f"/client/live/room/user/{live_id}", user)
    )
    return data


async def user_ids_in(h: Harness, live_id: str) -> list[str]:
    data = assert_ok(
        await h.call(
            "GET",
            "/client/live/room/user_list",
            "observer",
            params={"live_id": live_id, "page_size": "100"},
        )
    )
    return [user["user_id"] for user in data["list"]]
