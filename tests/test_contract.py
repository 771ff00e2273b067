"""Black-box checks of the external contract (PROTOCOL.md sections 1-4 and 6).

Each test probes one rule of the contract through the public surface only: REST calls, /ws
frames, media gateway routes, the `livesignal` command. Expected values are derived from the
contract (hashlib/hmac/base64/json by hand), never from the server's own helpers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from livesignal.client import SignalClient, SignalError
from tests.conftest import JWT_SECRET, Connect, Harness, HarnessFactory
from tests.conftest import live_room as ws_live_room
from tests.ports import free_port
from tests.rest_helpers import (
    PAGE_FIELDS,
    RELAY_FIELDS,
    ROOM_FIELDS,
    USER_FIELDS,
    assert_error,
    assert_ok,
    china_time,
    create_room,
    hmac_sha1_b64,
    info,
    join,
    live_room,
)

# --- helpers ----------------------------------------------------------------------------------


def check_user(user: dict[str, Any]) -> None:
    assert set(user) == USER_FIELDS, user
    assert isinstance(user["im_userid"], int) and not isinstance(user["im_userid"], bool)
    for key in ("user_id", "im_username", "nick", "avatar"):
        assert isinstance(user[key], str), (key, user)
    assert isinstance(user["extends"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in user["extends"].items())


def check_room(room: dict[str, Any], *, ws_attach: bool = False, room_token: bool = False) -> None:
    """A room object; start and join replies add the caller's room_token (§3.2), socket
    attach replies add seq and relay (§4.3)."""
    expected = ROOM_FIELDS | ({"seq", "relay", "room_token"} if ws_attach else set())
    expected |= {"room_token"} if room_token else set()
    assert set(room) == expected, set(room) ^ expected
    for key in ("live_id", "title", "notice", "cover_url", "pk_id", "push_url"):
        assert isinstance(room[key], str), key
    for key in ("hls_url", "rtmp_url", "flv_url"):
        assert isinstance(room[key], str), key
    for key in (
        "anchor_status",
        "online_count",
        "start_time",
        "end_time",
        "chat_id",
        "pv",
        "uv",
        "live_status",
    ):
        value = room[key]
        assert isinstance(value, int) and not isinstance(value, bool), (key, value)
    assert room["anchor_status"] in (0, 1)
    assert room["live_status"] in (0, 1, 2)
    assert isinstance(room["extends"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in room["extends"].items())
    check_user(room["anchor_info"])
    if ws_attach:
        assert isinstance(room["seq"], int)
        assert room["relay"] is None or set(room["relay"]) == RELAY_FIELDS


def check_relay(relay: dict[str, Any]) -> None:
    assert set(relay) == RELAY_FIELDS, relay
    for key in ("sid", "init_user_id", "init_room_id", "recv_room_id", "recv_user_id"):
        assert isinstance(relay[key], str) and relay[key], key
    assert isinstance(relay["status"], int) and 0 <= relay["status"] <= 6
    for key in ("start_at", "stop_at"):
        value = relay[key]
        assert value == "" or time.strptime(value, "%Y-%m-%d %H:%M:%S"), (key, value)
    assert isinstance(relay["extends"], dict)
    assert relay["reason"] in ("", "rejected", "canceled", "timeout", "stopped", "room_ended")


def check_paged(data: dict[str, Any]) -> None:
    assert set(data) == PAGE_FIELDS, data
    assert isinstance(data["total_count"], int)
    assert isinstance(data["page_total"], int)
    assert isinstance(data["end_page"], bool)
    assert isinstance(data["list"], list)


async def quiet_events(client: SignalClient, wait: float = 0.2) -> list[dict[str, Any]]:
    """Every event received within a short poll (no event is expected to be slower)."""
    deadline = asyncio.get_running_loop().time() + wait
    seen: list[dict[str, Any]] = []
    while asyncio.get_running_loop().time() < deadline:
        seen.extend(client.pending_events())
        await asyncio.sleep(0.02)
    seen.extend(client.pending_events())
    return seen


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


async def start_relay(h: Harness, init: str, recv: str) -> tuple[str, str, str]:
    room_a, room_b = await live_room(h, init), await live_room(h, recv)
    body = {"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": recv}
    started = assert_ok(await h.call("POST", "/client/relay/start", init, json=body))
    return room_a, room_b, started["relay_id"]


# --- 3.1 envelope on routing errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/client/nope", 404),
        ("GET", "/client/live/room/info/", 404),
        ("GET", "/server/nope", 404),
        ("PATCH", "/client/live/room/live_x", 405),
        ("GET", "/client/live/room/instance", 405),
        ("POST", "/client/relay/pending", 405),
        ("OPTIONS", "/client/live/room/list", 405),
        ("POST", "/server/auth/token", 405),
    ],
)
async def test_unknown_route_and_wrong_method_answer_in_the_envelope(
    harness: Harness, method: str, path: str, status: int
) -> None:
    for user in (None, "alice"):
        reply = await harness.call(method, path, user, headers={"X-Reqid": "rid-1"})
        assert_error(reply, status)
        assert reply.body["request_id"] == "rid-1"
        assert reply.headers["X-Reqid"] == "rid-1"
        assert set(reply.body) == {"request_id", "code", "message"}


async def test_success_bodies_have_exactly_the_envelope_keys(harness: Harness) -> None:
    reply = await harness.call("GET", "/client/user/profile", "alice")
    assert set(reply.body) == {"request_id", "code", "message", "data"}
    assert isinstance(reply.body["request_id"], str) and reply.body["request_id"]
    assert reply.headers["X-Reqid"] == reply.body["request_id"]


# --- 3.1 check order over many endpoints ------------------------------------------------------


async def test_401_comes_first_on_every_client_endpoint(harness: Harness) -> None:
    cases = [
        ("POST", "/client/live/room/instance", {"title": ""}),
        ("DELETE", "/client/live/room/instance/live_nope", None),
        ("GET", "/client/live/room/info/live_nope", None),
        ("GET", "/client/live/room/heartbeat/live_nope", None),
        ("GET", "/client/live/room/user_list?page_num=0", None),
        ("GET", "/client/live/room/list?page_num=x", None),
        ("PUT", "/client/live/room/extends", {"extends": 5}),
        ("POST", "/client/live/room/user/live_nope", None),
        ("DELETE", "/client/live/room/user/live_nope", None),
        ("GET", "/client/live/room?page_size=0", None),
        ("PUT", "/client/live/room/live_nope", None),
        ("POST", "/client/live/room/live_nope", None),
        ("DELETE", "/client/live/room/live_nope", None),
        ("POST", "/client/relay/start", {}),
        ("GET", "/client/relay/pending", None),
        ("GET", "/client/relay/relay_nope", None),
        ("GET", "/client/relay/relay_nope/token", None),
        ("POST", "/client/relay/relay_nope/stop", None),
        ("POST", "/client/relay/relay_nope/started", None),
        ("POST", "/client/relay/relay_nope/extends", {"extends": 1}),
        ("POST", "/client/relay/relay_nope/accept", None),
        ("POST", "/client/relay/relay_nope/reject", {"reason": 1}),
        ("POST", "/client/relay/relay_nope/cancel", None),
        ("GET", "/client/user/profile", None),
        ("PUT", "/client/user/user", {"nick": 5}),
        ("GET", "/client/user/user/nobody", None),
        ("GET", "/client/user/users", None),
    ]
    expired = harness.token("alice", ttl=1)
    harness.advance(10)
    for method, path, body in cases:
        assert_error(await harness.call(method, path, json=body), 401)
        assert_error(await harness.call(method, path, token="not-a-jwt", json=body), 401)
        assert_error(await harness.call(method, path, token=expired, json=body), 401, 499)


async def test_400_before_404_for_unknown_rooms_and_relays(harness: Harness) -> None:
    cases = [
        ("PUT", "/client/live/room/extends", {"live_id": "live_nope", "extends": {"a": 1}}),
        ("GET", "/client/live/room/user_list?live_id=live_nope&page_size=0", None),
        ("POST", "/client/relay/relay_nope/extends", {"extends": ["x"]}),
        ("POST", "/client/relay/relay_nope/reject", {"reason": 7}),
        ("POST", "/client/relay/start", {"init_room_id": "live_nope", "recv_room_id": "x"}),
    ]
    for method, path, body in cases:
        assert_error(await harness.call(method, path, "alice", json=body), 400)


async def test_404_before_403_before_601(harness: Harness) -> None:
    h = harness
    room = await live_room(h, "alice")
    assert_ok(await h.call("POST", f"/client/live/room/{room}", "alice"))  # ended
    # ended room, wrong caller: 403 (not 601)
    assert_error(await h.call("PUT", f"/client/live/room/{room}", "mallory"), 403)
    assert_error(await h.call("POST", f"/client/live/room/{room}", "mallory"), 403)
    assert_error(await h.call("DELETE", f"/client/live/room/{room}", "mallory"), 403)
    assert_error(await h.call("PUT", f"/client/live/room/{room}", "alice"), 409, 601)
    assert_error(await h.call("DELETE", f"/client/live/room/{room}", "alice"), 409, 601)
    # relay at final status 5: other parties 403, the right party 601
    _, _, relay_id = await start_relay(h, "bob", "carol")
    assert_ok(await h.call("POST", f"/client/relay/{relay_id}/reject", "carol"))
    for action, wrong, right in [
        ("accept", "bob", "carol"),
        ("reject", "bob", "carol"),
        ("cancel", "carol", "bob"),
        ("stop", "mallory", "bob"),
        ("started", "mallory", "bob"),
        ("extends", "mallory", "carol"),
    ]:
        body = {"extends": {"k": "v"}} if action == "extends" else None
        path = f"/client/relay/{relay_id}/{action}"
        assert_error(await h.call("POST", path, wrong, json=body), 403)
        assert_error(await h.call("POST", path, right, json=body), 409, 601)
        assert_error(
            await h.call("POST", f"/client/relay/relay_nope/{action}", wrong, json=body), 404
        )
    assert_error(await h.call("GET", f"/client/relay/{relay_id}/token", "mallory"), 403)
    assert_error(await h.call("GET", f"/client/relay/{relay_id}/token", "bob"), 409, 601)


# --- 3.2 objects and reply data ---------------------------------------------------------------


async def test_room_object_keys_and_types_on_every_room_reply(harness: Harness) -> None:
    h = harness
    created = await create_room(h, "alice", extends={"age": "18"}, notice="n", cover_url="c")
    check_room(created)
    assert created["live_status"] == 0 and created["anchor_status"] == 0
    assert (created["online_count"], created["pv"], created["uv"]) == (0, 0, 0)
    assert (created["start_time"], created["end_time"]) == (0, 0)
    live_id = created["live_id"]
    check_room(
        assert_ok(await h.call("PUT", f"/client/live/room/{live_id}", "alice")), room_token=True
    )
    check_room(await info(h, live_id))
    check_room(await join(h, "bob", live_id), room_token=True)
    for path in ("/client/live/room/list", "/client/live/room"):
        data = assert_ok(await h.call("GET", path, "bob"))
        check_paged(data)
        for room in data["list"]:
            check_room(room)


async def test_replies_with_nothing_to_return_are_empty_objects(harness: Harness) -> None:
    h = harness
    live_id = await live_room(h, "alice")
    await join(h, "bob", live_id)
    extends = {"live_id": live_id, "extends": {"k": "v"}}
    assert assert_ok(await h.call("PUT", "/client/live/room/extends", "alice", json=extends)) == {}
    assert assert_ok(await h.call("DELETE", f"/client/live/room/user/{live_id}", "bob")) == {}
    assert assert_ok(await h.call("DELETE", f"/client/live/room/{live_id}", "alice")) == {}
    path = f"/client/live/room/instance/{live_id}"
    assert assert_ok(await h.call("DELETE", path, "alice")) == {}
    other = await live_room(h, "carol")
    assert assert_ok(await h.call("POST", f"/client/live/room/{other}", "carol")) == {}


async def test_heartbeat_reply_shape(harness: Harness) -> None:
    live_id = await live_room(harness, "alice")
    data = assert_ok(await harness.call("GET", f"/client/live/room/heartbeat/{live_id}", "alice"))
    assert data == {"live_id": live_id, "live_status": 1}


async def test_user_object_everywhere(harness: Harness) -> None:
    h = harness
    profile = assert_ok(await h.call("GET", "/client/user/profile", "alice"))
    check_user(profile)
    assert profile["user_id"] == "alice" and profile["nick"] == "alice"
    updated = assert_ok(
        await h.call("PUT", "/client/user/user", "alice", json={"extends": {"a": "1"}})
    )
    assert updated["extends"] == {"a": "1"} and updated["nick"] == "alice"
    updated = assert_ok(
        await h.call("PUT", "/client/user/user", "alice", json={"nick": "A", "extends": {"b": "2"}})
    )
    assert updated["extends"] == {"a": "1", "b": "2"} and updated["nick"] == "A"
    shown = assert_ok(await h.call("GET", "/client/user/user/alice", "bob"))
    check_user(shown)
    assert shown["im_userid"] == profile["im_userid"]
    # Over REST a JSON array, as the original server and its SDKs (§2).
    listed = assert_ok(await h.call("GET", "/client/user/users?user_ids=bob,alice", "bob"))
    assert [u["user_id"] for u in listed] == ["bob", "alice"]
    assert listed[1]["im_userid"] == profile["im_userid"]
    assert listed[0]["im_userid"] != profile["im_userid"]
    assert_error(await h.call("GET", "/client/user/user/nobody", "bob"), 404)


async def test_anchor_info_tracks_the_current_profile(harness: Harness) -> None:
    h = harness
    live_id = await live_room(h, "alice")
    await h.call("PUT", "/client/user/user", "alice", json={"nick": "Queen", "avatar": "a.png"})
    anchor = (await info(h, live_id))["anchor_info"]
    assert (anchor["nick"], anchor["avatar"]) == ("Queen", "a.png")


async def test_times_are_china_standard_time_or_unix(harness: Harness) -> None:
    h = harness
    room = await create_room(h, "alice", start_at="2021-12-02 11:11:11", end_at=1656315406)
    assert room["start_time"] == 1638414671  # 03:11:11 UTC
    assert room["end_time"] == 1656315406
    for bad in ("2021-12-02T11:11:11", "tomorrow", 1.5, True, [1]):
        reply = await h.call(
            "POST", "/client/live/room/instance", "alice", json={"title": "t", "start_at": bad}
        )
        assert_error(reply, 400)


# --- 3.2 paging, list and search ---------------------------------------------------------------


async def test_paging_edges(harness: Harness) -> None:
    h = harness
    for index in range(3):
        await live_room(h, f"anchor{index}")
    path = "/client/live/room/list"
    data = assert_ok(await h.call("GET", path, "x", params={"page_num": "2", "page_size": "2"}))
    assert (data["total_count"], data["page_total"], data["end_page"]) == (3, 2, True)
    assert len(data["list"]) == 1
    data = assert_ok(await h.call("GET", path, "x", params={"page_num": "1", "page_size": "2"}))
    assert (data["page_total"], data["end_page"], len(data["list"])) == (2, False, 2)
    data = assert_ok(await h.call("GET", path, "x", params={"page_num": "9", "page_size": "2"}))
    assert (data["total_count"], data["page_total"], data["end_page"], data["list"]) == (
        3,
        2,
        True,
        [],
    )
    data = assert_ok(await h.call("GET", path, "x", params={"page_size": "1000"}))
    assert data["page_total"] == 1 and len(data["list"]) == 3
    for bad in ({"page_num": "0"}, {"page_num": "-1"}, {"page_size": "0"}, {"page_num": "x"}):
        assert_error(await h.call("GET", path, "x", params=bad), 400)
    for bad in ({"page_size": "1.5"}, {"page_num": "1e2"}):
        assert_error(await h.call("GET", "/client/live/room", "x", params=bad), 400)


async def test_empty_list_paging(harness: Harness) -> None:
    data = assert_ok(await harness.call("GET", "/client/live/room/list", "x"))
    assert data["total_count"] == 0 and data["list"] == [] and data["end_page"] is True


async def test_search_by_updated_nick_and_created_rooms_newest_first(harness: Harness) -> None:
    h = harness
    first = (await create_room(h, "u1", title="Alpha"))["live_id"]
    second = (await create_room(h, "u2", title="Beta"))["live_id"]
    live = await live_room(h, "u3", title="Gamma")
    ended = await live_room(h, "u4", title="Delta")
    assert_ok(await h.call("POST", f"/client/live/room/{ended}", "u4"))
    everything = assert_ok(await h.call("GET", "/client/live/room", "x", params={"keyword": ""}))
    assert [r["live_id"] for r in everything["list"]] == [live, second, first]
    await h.call("PUT", "/client/user/user", "u1", json={"nick": "ZedNick"})
    found = assert_ok(await h.call("GET", "/client/live/room", "x", params={"keyword": "zEdN"}))
    assert [r["live_id"] for r in found["list"]] == [first]
    none = assert_ok(await h.call("GET", "/client/live/room", "x", params={"keyword": "%"}))
    assert none["total_count"] == 0 and none["list"] == []
    by_id = assert_ok(
        await h.call("GET", "/client/live/room", "x", params={"keyword": second.upper()})
    )
    assert [r["live_id"] for r in by_id["list"]] == [second]


# --- 3.2/3.3 presence counters and anchor_status ----------------------------------------------


async def test_pv_uv_online_count_and_anchor_status(harness: Harness) -> None:
    h = harness
    created = await create_room(h, "alice")
    live_id = created["live_id"]
    await join(h, "bob", live_id)  # a created room can be joined
    started = assert_ok(await h.call("PUT", f"/client/live/room/{live_id}", "alice"))
    assert (started["online_count"], started["pv"], started["uv"]) == (2, 2, 2)
    assert started["anchor_status"] == 1
    await join(h, "bob", live_id)  # already present: nothing changes
    assert_ok(await h.call("DELETE", f"/client/live/room/user/{live_id}", "bob"))
    await join(h, "bob", live_id)  # a join that made bob present again: pv, not uv
    room = await info(h, live_id)
    assert (room["online_count"], room["pv"], room["uv"]) == (2, 3, 2)
    assert_ok(await h.call("DELETE", f"/client/live/room/user/{live_id}", "alice"))
    room = await info(h, live_id)
    assert (room["online_count"], room["anchor_status"]) == (1, 0)
    heartbeat = assert_ok(await h.call("GET", f"/client/live/room/heartbeat/{live_id}", "alice"))
    assert heartbeat == {"live_id": live_id, "live_status": 1}
    room = await info(h, live_id)
    assert (room["online_count"], room["anchor_status"], room["pv"], room["uv"]) == (2, 1, 4, 2)


async def test_admin_sees_push_url_others_do_not(harness: Harness) -> None:
    h = harness
    live_id = await live_room(h, "alice")
    admin = h.token("root", role="admin")
    shown = assert_ok(await h.call("GET", f"/client/live/room/info/{live_id}", token=admin))
    assert shown["push_url"].startswith(f"rtmp://127.0.0.1:1935/live/{live_id}?")
    assert (await info(h, live_id, "bob"))["push_url"] == ""
    listed = assert_ok(await h.call("GET", "/client/live/room/list", "bob"))
    assert listed["list"][0]["push_url"] == ""
    assert listed["list"][0]["flv_url"] == f"http://127.0.0.1:8088/live/{live_id}.flv"


# --- 3.4 RTC token -----------------------------------------------------------------------------


async def test_relay_token_is_an_rtc_room_token_into_the_other_room(harness: Harness) -> None:
    h = harness
    room_a, room_b, relay_id = await start_relay(h, "alice", "bob")
    accepted = assert_ok(await h.call("POST", f"/client/relay/{relay_id}/accept", "bob"))
    assert set(accepted) == {"relay_id", "relay_status", "relay_token"}
    rtc = h.settings.rtc
    for user, other_room, token in [
        ("bob", room_a, accepted["relay_token"]),
        (
            "alice",
            room_b,
            assert_ok(await h.call("GET", f"/client/relay/{relay_id}/token", "alice"))[
                "relay_token"
            ],
        ),
    ]:
        access_key, sign, enc = token.split(":")
        assert access_key == rtc.access_key
        assert sign == hmac_sha1_b64(rtc.secret_key, enc)
        assert len(enc) % 4 == 0  # URL-safe WITH padding
        payload = json.loads(base64.urlsafe_b64decode(enc))
        assert payload == {
            "appId": rtc.app_id,
            "roomName": other_room,
            "userId": user,
            "expireAt": int(h.clock.now()) + rtc.token_ttl,
            "permission": "user",
        }


async def test_relay_object_and_times(harness: Harness) -> None:
    h = harness
    _, _, relay_id = await start_relay(h, "alice", "bob")
    relay = assert_ok(await h.call("GET", f"/client/relay/{relay_id}", "anyone"))
    check_relay(relay)
    assert (relay["status"], relay["start_at"], relay["stop_at"], relay["reason"]) == (
        0,
        "",
        "",
        "",
    )
    accepted_at = h.clock.now()
    assert_ok(await h.call("POST", f"/client/relay/{relay_id}/accept", "bob"))
    h.advance(61)
    assert_ok(await h.call("POST", f"/client/relay/{relay_id}/stop", "bob"))
    relay = assert_ok(await h.call("GET", f"/client/relay/{relay_id}", "anyone"))
    check_relay(relay)
    assert relay["start_at"] == china_time(accepted_at)
    assert relay["stop_at"] == china_time(accepted_at + 61)
    assert (relay["status"], relay["reason"]) == (6, "stopped")
    pending = assert_ok(await h.call("GET", "/client/relay/pending", "bob"))
    assert pending == {"list": []}


async def test_pk_id_only_while_established(harness: Harness) -> None:
    h = harness
    room_a, room_b, relay_id = await start_relay(h, "alice", "bob")
    assert (await info(h, room_a))["pk_id"] == ""
    assert_ok(await h.call("POST", f"/client/relay/{relay_id}/accept", "bob"))
    assert (await info(h, room_a))["pk_id"] == relay_id
    assert (await info(h, room_b))["pk_id"] == relay_id
    assert_ok(await h.call("POST", f"/client/relay/{relay_id}/stop", "alice"))
    assert (await info(h, room_b))["pk_id"] == ""


# --- 4.1 frames ------------------------------------------------------------------------------


async def test_welcome_frame_fields_and_types(make_harness: HarnessFactory) -> None:
    h = await make_harness({"presence": {"heartbeat_interval": 2.0, "missed_heartbeats": 4}})
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(h.ws_url, headers={"Authorization": h.token("zoe")}) as ws:
            welcome = await ws.receive_json(timeout=5)
    assert set(welcome) == {"type", "data"} and welcome["type"] == "welcome"
    data = welcome["data"]
    assert set(data) == {"session_id", "user_id", "heartbeat_interval", "heartbeat_timeout"}
    assert isinstance(data["session_id"], str) and data["session_id"]
    assert data["user_id"] == "zoe"
    assert data["heartbeat_interval"] == 2.0 and data["heartbeat_timeout"] == 8.0


async def test_ws_reply_shapes_for_every_list_op(harness: Harness, connect: Connect) -> None:
    h = harness
    alice = await connect(h, "alice")
    live_id = await ws_live_room(alice)
    async with aiohttp.ClientSession() as session:
        url = f"{h.ws_url}?token={h.token('bob')}"
        async with session.ws_connect(url) as ws:
            await ws.receive_json(timeout=5)
            frames: list[tuple[str, dict[str, Any], set[str]]] = [
                ("room.list", {}, PAGE_FIELDS),
                ("room.search", {"keyword": ""}, PAGE_FIELDS),
                ("room.user_list", {"live_id": live_id}, PAGE_FIELDS),
                ("relay.pending", {}, {"list"}),
                ("user.list", {"user_ids": "alice,bob"}, {"list"}),
                ("room.heartbeat", {"live_id": live_id}, set()),
            ]
            for index, (op, data, keys) in enumerate(frames):
                await ws.send_str(orjson.dumps({"id": index, "type": op, "data": data}).decode())
                reply = await ws.receive_json(timeout=5)
                assert set(reply) == {"id", "type", "code", "message", "data"}, reply
                assert (reply["id"], reply["type"]) == (index, "reply")
                if op == "room.heartbeat":
                    assert reply["code"] == 404 and reply["data"] is None
                    assert isinstance(reply["message"], str) and reply["message"]
                    continue
                assert (reply["code"], reply["message"]) == (0, "success")
                assert set(reply["data"]) == keys, (op, reply)
            frame = {"id": "s", "type": "room.join", "data": {"live_id": live_id}}
            await ws.send_str(orjson.dumps(frame).decode())
            joined = await ws.receive_json(timeout=5)
            assert joined["id"] == "s" and joined["code"] == 0
            check_room(joined["data"], ws_attach=True)
            assert joined["data"]["relay"] is None and joined["data"]["push_url"] == ""


async def test_app_level_ping_is_only_answered_with_pong(harness: Harness) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{harness.ws_url}?token={harness.token('alice')}"
        async with session.ws_connect(url) as ws:
            await ws.receive_json(timeout=5)
            await ws.send_str('{"type": "ping"}')
            await ws.send_str('{"id": 1, "type": "user.profile"}')
            assert await ws.receive_json(timeout=5) == {"type": "pong"}
            assert (await ws.receive_json(timeout=5))["id"] == 1


# --- 4.3 room events ----------------------------------------------------------------------------


async def test_room_events_payloads_and_consecutive_seq(harness: Harness, connect: Connect) -> None:
    h = harness
    created = await create_room(h, "alice")
    live_id = created["live_id"]
    viewer = await connect(h, "vic")
    joined = await viewer.request("room.join", live_id=live_id)
    base = joined["seq"]
    assert_ok(await h.call("PUT", f"/client/live/room/{live_id}", "alice"))
    extends = {"live_id": live_id, "extends": {"k": "v"}}
    assert_ok(await h.call("PUT", "/client/live/room/extends", "alice", json=extends))
    await join(h, "bob", live_id)
    assert_ok(await h.call("DELETE", f"/client/live/room/user/{live_id}", "bob"))
    assert_ok(await h.call("DELETE", f"/client/live/room/user/{live_id}", "alice"))
    assert_ok(await h.call("POST", f"/client/live/room/{live_id}", "alice"))
    events = await quiet_events(viewer)
    assert names(events) == [
        "room.started",
        "member.joined",
        "anchor.online",
        "room.extends",
        "member.joined",
        "member.left",
        "member.left",
        "anchor.offline",
        "room.stopped",
    ]
    assert [e["seq"] for e in events] == list(range(base + 1, base + 1 + len(events)))
    for event in events:
        assert set(event) == {"type", "event", "live_id", "seq", "data"}
        assert event["type"] == "event" and event["live_id"] == live_id
        assert isinstance(event["data"], dict)
    check_user(events[1]["data"]["user"])
    assert events[1]["data"]["user"]["user_id"] == "alice"
    assert events[3]["data"]["extends"]["k"] == "v"
    assert events[5]["data"] == {"user_id": "bob", "reason": "leave"}
    assert events[6]["data"] == {"user_id": "alice", "reason": "leave"}
    assert events[8]["data"] == {"reason": "anchor"}


async def test_chat_message_payload(harness: Harness, connect: Connect) -> None:
    h = harness
    alice = await connect(h, "alice")
    live_id = await ws_live_room(alice)
    viewer = await connect(h, "vic")
    await viewer.request("room.join", live_id=live_id)
    await h.call("PUT", "/client/user/user", "alice", json={"nick": "Al"})
    await alice.request("chat.send", live_id=live_id, text="héllo")
    message = await viewer.next_event("chat.message")
    assert message["data"] == {
        "user_id": "alice",
        "nick": "Al",
        "text": "héllo",
        "ts": int(h.clock.now() * 1000),
    }


async def test_switch_and_timeout_reasons(harness: Harness, connect: Connect) -> None:
    h = harness
    alice = await connect(h, "alice")
    room_a = await ws_live_room(alice)
    room_b = await live_room(h, "carol")
    await join(h, "bob", room_a)
    await join(h, "bob", room_b)
    await join(h, "dan", room_a)
    await h.pass_time(h.settings.presence.timeout + 1)
    await h.sweep()
    events = [e for e in await quiet_events(alice) if e["event"] == "member.left"]
    assert [e["data"] for e in events] == [
        {"user_id": "bob", "reason": "switched"},
        {"user_id": "dan", "reason": "timeout"},
    ]


async def test_room_deleted_and_then_no_member_left(harness: Harness, connect: Connect) -> None:
    h = harness
    live_id = await live_room(h, "alice")
    viewer = await connect(h, "vic")
    await viewer.request("room.join", live_id=live_id)
    other = await live_room(h, "carol")
    watcher = await connect(h, "wat")
    await watcher.request("room.join", live_id=other)
    assert_ok(await h.call("DELETE", f"/client/live/room/instance/{live_id}", "alice"))
    events = await quiet_events(viewer)
    assert names(events) == ["room.stopped", "room.deleted"]
    assert events[1]["data"] == {}
    await viewer.request("room.join", live_id=other)  # no switched departure from a gone room
    await viewer.close()
    seen = await quiet_events(watcher)
    assert [(e["event"], e["data"].get("reason")) for e in seen] == [
        ("member.joined", None),
        ("member.left", "leave"),
    ]
    assert_error(await h.call("GET", f"/client/live/room/info/{live_id}", "vic"), 404)
    assert_error(await h.call("POST", f"/client/live/room/user/{live_id}", "vic"), 404)


# --- 4.3 relay events ---------------------------------------------------------------------------


async def test_relay_events_are_user_directed_and_private_until_status_1(
    harness: Harness, connect: Connect
) -> None:
    h = harness
    alice, bob = await connect(h, "alice"), await connect(h, "bob")
    room_a, room_b = await ws_live_room(alice), await ws_live_room(bob)
    viewer = await connect(h, "vic")
    await viewer.request("room.join", live_id=room_a)
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    relay_id = started["relay_id"]
    await alice.request("relay.extends", relay_id=relay_id, extends={"x": "1"})
    invited = await bob.next_event("relay.invited")
    assert set(invited) == {"type", "event", "data"}
    check_relay(invited["data"]["relay"])
    # the initiator is not invited; invitations and their extends stay private
    assert [e for e in await quiet_events(alice) if e["event"] != "member.joined"] == []
    assert names(await quiet_events(viewer)) == []
    await bob.request("relay.reject", relay_id=relay_id, reason="busy now")
    for anchor in (alice, bob):
        rejected = await anchor.next_event("relay.rejected")
        assert set(rejected) == {"type", "event", "data"}
        assert set(rejected["data"]) == {"relay", "message"}
        assert rejected["data"]["message"] == "busy now"
        assert rejected["data"]["relay"]["status"] == 5
        assert rejected["data"]["relay"]["reason"] == "rejected"
    assert names(await quiet_events(viewer)) == []


async def test_pending_invitation_canceled_when_a_room_ends(
    harness: Harness, connect: Connect
) -> None:
    h = harness
    alice, bob = await connect(h, "alice"), await connect(h, "bob")
    room_a, room_b = await ws_live_room(alice), await ws_live_room(bob)
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    assert_ok(await h.call("POST", f"/client/live/room/{room_a}", "alice"))
    for anchor in (alice, bob):
        canceled = await anchor.next_event("relay.canceled")
        assert set(canceled["data"]) == {"relay"}
        relay = canceled["data"]["relay"]
        assert relay["sid"] == started["relay_id"]
        assert (relay["status"], relay["reason"]) == (6, "room_ended")
        assert relay["stop_at"] == china_time(h.clock.now())
    assert "pk.state" not in names(await quiet_events(bob))


async def test_pk_state_to_both_rooms_once_established(harness: Harness, connect: Connect) -> None:
    h = harness
    alice, bob = await connect(h, "alice"), await connect(h, "bob")
    room_a, room_b = await ws_live_room(alice), await ws_live_room(bob)
    viewer_a, viewer_b = await connect(h, "va"), await connect(h, "vb")
    await viewer_a.request("room.join", live_id=room_a)
    await viewer_b.request("room.join", live_id=room_b)
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    relay_id = started["relay_id"]
    await bob.request("relay.accept", relay_id=relay_id)
    await bob.request("relay.extends", relay_id=relay_id, extends={"score": "1"})
    await bob.request("relay.extends", relay_id=relay_id, extends={"score": "1"})  # no change
    await alice.request("relay.started", relay_id=relay_id)
    await alice.request("relay.started", relay_id=relay_id)  # repeated: no change
    for viewer, live_id in ((viewer_a, room_a), (viewer_b, room_b)):
        events = [e for e in await quiet_events(viewer) if e["event"] == "pk.state"]
        relays = [e["data"]["relay"] for e in events]
        assert [(r["status"], r["extends"]) for r in relays] == [
            (1, {}),
            (1, {"score": "1"}),
            (2, {"score": "1"}),
        ]
        assert all(e["live_id"] == live_id and set(e["data"]) == {"relay"} for e in events)
    joined = await (await connect(h, "late")).request("room.join", live_id=room_b)
    assert joined["relay"]["sid"] == relay_id and joined["relay"]["status"] == 2


# --- 4.5 resume ---------------------------------------------------------------------------------


async def test_resume_rules(harness: Harness, connect: Connect) -> None:
    h = harness
    alice = await connect(h, "alice")
    live_id = (await alice.request("room.create", title="r"))["live_id"]
    current = (await alice.request("room.start", live_id=live_id))["seq"]
    assert current == 3  # room.started, member.joined, anchor.online
    bob = await connect(h, "bob")
    with pytest.raises(SignalError) as too_high:
        await bob.request("room.resume", live_id=live_id, since=current + 5)
    assert too_high.value.code == 400
    with pytest.raises(SignalError) as unknown:
        await bob.request("room.resume", live_id="live_nope", since=0)
    assert unknown.value.code == 404
    resumed = await bob.request("room.resume", live_id=live_id, since=0)
    assert resumed == {"recovered": True, "seq": current + 1}
    replayed = await quiet_events(bob)
    assert [e["seq"] for e in replayed] == list(range(1, current + 2))
    assert replayed[-1]["event"] == "member.joined"
    assert replayed[-1]["data"]["user"]["user_id"] == "bob"
    assert_ok(await h.call("POST", f"/client/live/room/{live_id}", "alice"))
    carol = await connect(h, "carol")
    with pytest.raises(SignalError) as ended:
        await carol.request("room.resume", live_id=live_id, since=0)
    assert ended.value.code == 601


# --- 1. CLI ----------------------------------------------------------------------------------


def test_token_command_prints_only_a_verifiable_jwt(tmp_path: Any) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[auth]\njwt_secret = "{JWT_SECRET}"\ntoken_ttl = 120\n')
    env = {k: v for k, v in os.environ.items() if k != "LIVESIGNAL_CONFIG"}
    before = int(time.time())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "livesignal",
            "token",
            "--user-id",
            "u-1",
            "--config",
            str(config),
            "--role",
            "admin",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    claims = jwt.decode(lines[0], JWT_SECRET, algorithms=["HS256"])
    assert claims["UserId"] == "u-1" and claims["Role"] == "admin"
    assert {"AppId", "DeviceId", "exp"} <= set(claims)
    assert before + 120 <= claims["exp"] <= int(time.time()) + 121
    no_secret = subprocess.run(
        [sys.executable, "-m", "livesignal", "token", "--user-id", "u-1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert no_secret.returncode == 2 and no_secret.stdout == ""
    assert "jwt_secret" in no_secret.stderr


async def test_serve_defaults_log_one_listen_line_and_sigterm_exits_0(tmp_path: Any) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LIVESIGNAL_CONFIG"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livesignal",
        "serve",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stderr is not None
        seen: list[str] = []
        async with asyncio.timeout(15):
            while not any(f"127.0.0.1:{port}" in line for line in seen):
                seen.append((await process.stderr.readline()).decode())
        assert sum("listening" in line for line in seen) == 1
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/client/user/profile") as response:
                assert response.status == 401
                assert (await response.json())["code"] == 401
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# --- 6. media gateway --------------------------------------------------------------------------


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


# --- fixed after the contract review ---------------------------------------------------------


async def test_switching_away_from_a_lapsed_membership_is_a_timeout(
    harness: Harness, connect: Connect
) -> None:
    room_a = await live_room(harness, "alice")
    room_b = await live_room(harness, "carol")
    watcher = await connect(harness, "watcher")
    await watcher.request("room.join", live_id=room_a)
    await join(harness, "bob", room_a)
    await harness.pass_time(harness.settings.presence.timeout + 5)  # lapsed, no sweep ran
    await join(harness, "bob", room_b)
    while True:
        left = await watcher.next_event("member.left")
        if left["data"]["user_id"] == "bob":
            break
    assert left["data"] == {"user_id": "bob", "reason": "timeout"}


async def test_anchor_absence_counts_from_the_lapse_even_when_it_switches_later(
    harness: Harness,
) -> None:
    room_a = await live_room(harness, "alice")
    room_b = await live_room(harness, "carol")
    lapse = harness.settings.presence.timeout
    close_after = harness.settings.presence.anchor_offline_close
    await harness.pass_time(lapse + 5)
    await join(harness, "alice", room_b)  # the anchor of A turns up in B, 5 s after lapsing
    harness.advance(close_after - 5 + 1)  # 1 s past (lapse + anchor_offline_close)
    assert_ok(await harness.call("GET", f"/client/live/room/heartbeat/{room_b}", "carol"))
    await harness.sweep()
    ended = await info(harness, room_a)
    assert ended["live_status"] == 2
    assert ended["end_time"] == int(harness.clock.now() - 1)


async def test_an_admin_starting_a_room_over_the_socket_receives_its_events(
    harness: Harness, connect: Connect
) -> None:
    room = await create_room(harness, "alice")
    admin = await SignalClient.connect(harness.ws_url, harness.token("root", role="admin"))
    try:
        reply = await admin.request("room.start", live_id=room["live_id"])
        assert reply["live_status"] == 1 and "seq" in reply
        await join(harness, "bob", room["live_id"])
        joined = await admin.next_event("member.joined")
        assert joined["data"]["user"]["user_id"] == "bob"
        assert (await info(harness, room["live_id"]))["online_count"] == 1  # not a member
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/client/live/room/instance"),
        ("POST", "/client/live/room/extends"),
        ("DELETE", "/client/live/room/list"),
        ("PUT", "/client/live/room/user_list"),
        ("DELETE", "/client/live/room/instance"),
        ("GET", "/client/relay/start"),
    ],
)
async def test_literal_paths_with_another_method_are_405_not_a_room_or_relay(
    harness: Harness, method: str, path: str
) -> None:
    reply = await harness.call(method, path, "alice")
    assert reply.status == 405 and reply.code == 405
    assert reply.headers["Allow"]


async def test_a_heartbeat_over_the_socket_does_not_set_the_rest_timestamp(
    harness: Harness, connect: Connect
) -> None:
    anchor = await connect(harness, "anchor")
    live_id = await ws_live_room(anchor)
    viewer = await connect(harness, "viewer")
    await viewer.request("room.join", live_id=live_id)
    beat = await viewer.request("room.heartbeat", live_id=live_id)
    assert beat == {"live_id": live_id, "live_status": 1}
    await viewer.close()
    # Nothing but the socket held the member: it leaves now, by "leave", not later by timeout.
    left = await anchor.next_event("member.left")
    assert left["data"] == {"user_id": "viewer", "reason": "leave"}


async def test_app_level_ping_with_an_id_still_gets_a_pong(harness: Harness) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{harness.ws_url}?token={harness.token('alice')}"
        async with session.ws_connect(url) as ws:
            assert (await ws.receive_json())["type"] == "welcome"
            await ws.send_str('{"type": "ping", "id": 3}')
            assert await ws.receive_json(timeout=5) == {"type": "pong"}


@pytest.mark.parametrize("when", ["2021-12-2 1:1:1", "2021-12-02T11:11:11", "2021-13-02 11:11:11"])
async def test_times_must_have_the_exact_format(harness: Harness, when: str) -> None:
    reply = await harness.call(
        "POST", "/client/live/room/instance", "alice", json={"title": "t", "start_at": when}
    )
    assert reply.status == 400 and reply.code == 400


def test_token_refuses_an_empty_user_id(tmp_path: Any) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[auth]\njwt_secret = "{JWT_SECRET}"\n')
    ran = subprocess.run(
        [sys.executable, "-m", "livesignal", "token", "--user-id", "", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ran.returncode == 2 and ran.stdout == "" and "user-id" in ran.stderr
