"""PROTOCOL §6, black box: the media gateway routes answer in their own format."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import orjson

from tests.conftest import Harness


async def _gateway(
    h: Harness, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, dict[str, Any]]:
    data = orjson.dumps(body) if body is not None else None
    async with h.session.request(method, h.base_url + path, headers=headers, data=data) as r:
        return r.status, orjson.loads(await r.read())


def _rtc_token(h: Harness, room: str, user: str, ttl: int = 600) -> str:
    rtc = h.settings.rtc
    payload = {
        "appId": rtc.app_id,
        "roomName": room,
        "userId": user,
        "expireAt": int(h.clock.now()) + ttl,
        "permission": "user",
    }
    enc = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
    sign = base64.urlsafe_b64encode(
        hmac.new(rtc.secret_key.encode(), enc.encode(), hashlib.sha1).digest()
    ).decode()
    return f"{rtc.access_key}:{sign}:{enc}"


async def test_gateway_accepts_both_room_headers_and_answers_in_its_format(
    harness: Harness,
) -> None:
    h = harness
    token = _rtc_token(h, "room1", "alice")
    for header in ("Room-Id", "RoomId"):
        for path in ("/exit", "/rtmp/exit", "/wechat/exit"):
            status, body = await _gateway(h, "POST", path, {"Token": token, header: "room1"})
            assert (status, body) == (200, {"resultCode": 10000})
    status, body = await _gateway(h, "GET", "/media/resources?room_id=room1", {"Token": token})
    assert (status, body) == (200, {"resultCode": 10000, "list": []})
    assert await _gateway(h, "GET", "/monitor/state", {}) == (200, {"resultCode": 10000})


async def test_gateway_error_codes(harness: Harness) -> None:
    h = harness
    token = _rtc_token(h, "room1", "alice")
    expired = _rtc_token(h, "room1", "alice", ttl=-10)
    cases: list[tuple[str, str, dict[str, str], Any, int]] = [
        ("POST", "/exchange", {"Room-Id": "room1"}, {}, 40001),
        ("POST", "/exchange", {"Token": token, "Room-Id": "room2"}, {}, 40001),
        ("POST", "/rtmp/exchange", {"Token": expired, "RoomId": "room1"}, {}, 40001),
        ("POST", "/wechat/exchange", {"Token": "a:b:c", "Room-Id": "room1"}, {}, 40001),
        ("POST", "/exchange", {"Token": token, "Room-Id": "room1"}, {"sdp": "x"}, 40002),
        ("POST", "/exchange", {"Token": token, "Room-Id": "room1"}, [1], 40002),
        (
            "POST",
            "/rtmp/exchange",
            {"Token": token, "RoomId": "room1"},
            {"rtc": {"subscribeList": [{"uri": "u"}]}},
            40002,
        ),
        ("GET", "/exchange", {}, None, 41002),
        ("POST", "/monitor/state", {}, None, 41002),
        ("POST", "/rtmp/unknown", {}, None, 41002),
        ("GET", "/wechat/whatever/deeper", {}, None, 41002),
    ]
    for method, path, headers, body, code in cases:
        status, reply = await _gateway(h, method, path, headers, body)
        assert status == 200, (path, reply)
        assert reply["resultCode"] == code, (path, reply)
        assert isinstance(reply["message"], str) and reply["message"]
    status, reply = await _gateway(h, "POST", "/rtmp/unknown", {})
    assert reply["message"] == "http server hasn't the processor"
