"""PROTOCOL §3, black box: the REST layer through its public surface only.

Expected values are derived from the contract (hashlib/hmac/base64/json by hand), never from
the server's own helpers."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import Harness
from tests.contract.helpers import (
    check_paged,
    check_relay,
    check_room,
    start_relay,
)
from tests.rest_helpers import (
    assert_error,
    assert_ok,
    china_time,
    create_room,
    hmac_sha1_b64,
    info,
    join,
    live_room,
)

# --- 3.1 envelope on routing errors ---------------------------------------------------------------


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


# --- 3.1 check order over many endpoints ----------------------------------------------------------


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


# --- 3.2 objects and reply data -------------------------------------------------------------------


@pytest.mark.both_backends
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


@pytest.mark.parametrize("when", ["2021-12-2 1:1:1", "2021-12-02T11:11:11", "2021-13-02 11:11:11"])
async def test_times_must_have_the_exact_format(harness: Harness, when: str) -> None:
    reply = await harness.call(
        "POST", "/client/live/room/instance", "alice", json={"title": "t", "start_at": when}
    )
    assert reply.status == 400 and reply.code == 400


# --- 3.2 paging, list and search ------------------------------------------------------------------


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


@pytest.mark.both_backends
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


# --- 3.2/3.3 presence counters and anchor_status --------------------------------------------------


@pytest.mark.both_backends
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


@pytest.mark.both_backends
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


# --- 3.4/3.5 RTC token and relay ------------------------------------------------------------------


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


@pytest.mark.both_backends
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


@pytest.mark.both_backends
async def test_pk_id_only_while_established(harness: Harness) -> None:
    h = harness
    room_a, room_b, relay_id = await start_relay(h, "alice", "bob")
    assert (await info(h, room_a))["pk_id"] == ""
    assert_ok(await h.call("POST", f"/client/relay/{relay_id}/accept", "bob"))
    assert (await info(h, room_a))["pk_id"] == relay_id
    assert (await info(h, room_b))["pk_id"] == relay_id
    assert_ok(await h.call("POST", f"/client/relay/{relay_id}/stop", "alice"))
    assert (await info(h, room_b))["pk_id"] == ""
