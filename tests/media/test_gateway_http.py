"""The gateway's HTTP surface: result codes, Token checks, body validation, unknown routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from livesignal.signal.model.auth import RtcTokenCodec

from ._rtc import headers

Client = TestClient[Any, Any]
TokenFor = Callable[[str, str], str]

# Parses as SDP but aiortc cannot negotiate it (no ICE credentials, no DTLS fingerprint).
NO_ICE_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 96",
        "a=mid:0",
        "a=sendonly",
        "a=rtpmap:96 opus/48000/2",
        "",
    ]
)


async def test_monitor_state(client: Client) -> None:
    response = await client.get("/monitor/state")
    assert response.status == 200
    assert await response.json() == {"resultCode": 10000}


@pytest.mark.parametrize(
    "path",
    ["/exchange", "/exit", "/rtmp/exchange", "/rtmp/exit", "/wechat/exchange", "/wechat/exit"],
)
async def test_missing_token_is_40001(client: Client, path: str) -> None:
    response = await client.post(path, json={}, headers={"Room-Id": "room1"})
    assert response.status == 200
    body = await response.json()
    assert body["resultCode"] == 40001
    assert body["message"]


async def test_bad_tokens_are_40001(
    client: Client, tokens: RtcTokenCodec, token_for: TokenFor
) -> None:
    good = token_for("room1", "alice")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    expired = tokens.issue("room1", "alice", time.time() - 10 * 86400)
    other_room = token_for("room2", "alice")
    for token in ("garbage", forged, expired, other_room):
        body = await (await client.post("/exit", headers=headers(token, "room1"))).json()
        assert body["resultCode"] == 40001, token
    # no room header at all
    body = await (await client.post("/exit", headers={"Token": good})).json()
    assert body["resultCode"] == 40001
    # both header spellings work
    for legacy in (False, True):
        response = await client.post("/exit", headers=headers(good, "room1", legacy=legacy))
        assert await response.json() == {"resultCode": 10000}


async def test_bad_bodies_are_40002(client: Client, token_for: TokenFor) -> None:
    hdrs = headers(token_for("room1", "alice"), "room1")
    bad: list[Any] = [
        b"{not json",
        b"[]",
        b"",
        {"sdp": "v=0"},
        {"sdp": {"type": "answer", "sdp": "v=0"}},
        {"sdp": {"type": "offer", "sdp": "not sdp"}},
        {"sdp": {"type": "offer", "sdp": "v=0\r\n"}},
        {"sdp": {"type": "offer", "sdp": NO_ICE_OFFER}},
        {"sdp": {"type": "offer", "sdp": "v=0\r\n"}, "subscribeList": [{"uri": 5}]},
        {"sdp": {"type": "offer", "sdp": "v=0\r\n"}, "subscribeList": [{"uri": "nope"}]},
    ]
    for body in bad:
        if isinstance(body, bytes):
            response = await client.post("/exchange", data=body, headers=hdrs)
        else:
            response = await client.post("/exchange", json=body, headers=hdrs)
        reply = await response.json()
        assert reply["resultCode"] == 40002, body
        assert reply["message"]


async def test_bad_rtmp_and_wechat_bodies_are_40002(client: Client, token_for: TokenFor) -> None:
    hdrs = headers(token_for("room1", "alice"), "room1")
    cases: list[tuple[str, Any]] = [
        ("/rtmp/exchange", {"rtmp": {"uri": "http://example.invalid/x"}}),
        ("/rtmp/exchange", {"rtmp": {"uri": "rtmp://127.0.0.1:1/live/x", "audio": "yes"}}),
        ("/rtmp/exchange", {"rtc": {"subscribeList": [{"uri": "a"}]}}),
        ("/rtmp/exchange", {"rtmp": 3}),
        ("/wechat/exchange", {"subscribeList": [{"uri": "unknown"}]}),
        ("/wechat/exchange", {"rtmp": {"video": 1}}),
    ]
    for path, body in cases:
        reply = await (await client.post(path, json=body, headers=hdrs)).json()
        assert reply["resultCode"] == 40002, (path, body, reply)


async def test_unknown_gateway_routes_are_41002(client: Client) -> None:
    for method, path in [
        ("POST", "/wechat/nothing"),
        ("GET", "/rtmp/whatever/else"),
        ("POST", "/monitor/other"),
        ("GET", "/exchange"),
        ("POST", "/monitor/state"),
        ("GET", "/media/unknown"),
    ]:
        response = await client.request(method, path)
        assert response.status == 200, path
        assert await response.json() == {
            "resultCode": 41002,
            "message": "http server hasn't the processor",
        }


async def test_resources_needs_a_token_for_that_room(client: Client, token_for: TokenFor) -> None:
    token = token_for("room1", "alice")
    reply = await (await client.get("/media/resources", params={"room_id": "room1"})).json()
    assert reply["resultCode"] == 40001
    reply = await (
        await client.get("/media/resources", params={"room_id": "room1"}, headers={"Token": token})
    ).json()
    assert reply == {"resultCode": 10000, "list": []}
    reply = await (
        await client.get("/media/resources", params={"room_id": "room2"}, headers={"Token": token})
    ).json()
    assert reply["resultCode"] == 40001


async def test_on_publish_refuses_unsigned_and_accepts_signed(
    client: Client, stream_urls: Any
) -> None:
    base = {"call": "publish", "app": "live", "name": "s1", "type": "live"}
    response = await client.post("/media/rtmp/on_publish", data=base)
    assert response.status == 403
    url = stream_urls.push_url("s1", int(time.time()) + 60)
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    response = await client.post("/media/rtmp/on_publish", data={**base, **query})
    assert response.status == 200
    expired = stream_urls.push_url("s1", int(time.time()) - 1)
    query = dict(part.split("=", 1) for part in expired.split("?", 1)[1].split("&"))
    response = await client.post("/media/rtmp/on_publish", data={**base, **query})
    assert response.status == 403
