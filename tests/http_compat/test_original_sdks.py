"""Issue 9: the requests the original Android/iOS/Web SDKs send, parsed the way they parse.

They send the raw token in Authorization (no "Bearer"), `Content-Type: application/json` with
a `{}` body on PUT/DELETE, and read `data` as the original server shaped it. Where the API
documents and the original deployment differ, both `[compat] profile`s are checked.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from tests.conftest import Harness, HarnessFactory, Reply
from tests.rest_helpers import assert_error, assert_ok, hmac_sha1_b64

ORIGINAL = {"compat": {"profile": "original"}}


async def sdk(h: Harness, method: str, path: str, user: str, **params: Any) -> Reply:
    """A call as the SDKs make it: raw token, JSON content type, `{}` body on PUT/DELETE."""
    body = b"{}" if method in ("PUT", "DELETE") else None
    headers = {"Authorization": h.token(user), "Content-Type": "application/json"}
    async with h.session.request(
        method, h.base_url + path, data=body, params=params or None, headers=headers
    ) as response:
        return Reply(response.status, orjson.loads(await response.read()), dict(response.headers))


async def live_room(h: Harness, anchor: str) -> tuple[str, dict[str, Any]]:
    created = await h.call("POST", "/client/live/room/instance", anchor, json={"title": "t"})
    live_id = assert_ok(created)["live_id"]
    started = assert_ok(await sdk(h, "PUT", f"/client/live/room/{live_id}", anchor))
    return str(live_id), started


def room_token_payload(h: Harness, token: str) -> dict[str, Any]:
    """The token checked as PROTOCOL §3.4 signs it: `<ak>:<b64 sign>:<b64 json>`."""
    access_key, sign, enc = token.split(":")
    assert access_key == h.settings.rtc.access_key
    assert sign == hmac_sha1_b64(h.settings.rtc.secret_key, enc)
    payload: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(enc))
    return payload


async def test_app_config_answers_the_im_app_id(make_harness: HarnessFactory) -> None:
    h = await make_harness({"app": {"im_app_id": "im-123"}})
    assert assert_ok(await sdk(h, "GET", "/client/app/config", "alice")) == {"im_app_id": "im-123"}
    plain = await make_harness()
    assert assert_ok(await sdk(plain, "GET", "/client/app/config", "alice")) == {"im_app_id": ""}


async def test_start_and_join_return_a_room_token_the_gateway_takes(harness: Harness) -> None:
    h = harness
    live_id, started = await live_room(h, "anchor")
    anchor_token = room_token_payload(h, started["room_token"])
    assert (anchor_token["roomName"], anchor_token["userId"]) == (live_id, "anchor")
    joined = assert_ok(await sdk(h, "POST", f"/client/live/room/user/{live_id}", "viewer"))
    assert room_token_payload(h, joined["room_token"])["userId"] == "viewer"
    async with h.session.get(
        h.base_url + "/media/resources",
        params={"room_id": live_id},
        headers={"Token": started["room_token"], "Room-Id": live_id},
    ) as response:
        assert (await response.json()) == {"resultCode": 10000, "list": []}


@pytest.mark.both_backends
async def test_users_and_imusers_answer_arrays(harness: Harness) -> None:
    h = harness
    profiles = {}
    for user in ("a", "b", "c"):
        profiles[user] = assert_ok(await sdk(h, "GET", "/client/user/profile", user))
    listed = assert_ok(await sdk(h, "GET", "/client/user/users", "a", user_ids="c,a"))
    assert [u["user_id"] for u in listed] == ["c", "a"]
    async with h.session.get(
        h.base_url + "/client/user/users?user_ids=b&user_ids=a",
        headers={"Authorization": h.token("a")},
    ) as response:
        repeated = orjson.loads(await response.read())["data"]
    assert [u["user_id"] for u in repeated] == ["b", "a"]
    im_ids = f"{profiles['b']['im_userid']},999999999,{profiles['c']['im_userid']}"
    found = assert_ok(await sdk(h, "GET", "/client/user/imusers", "a", im_user_ids=im_ids))
    assert [u["user_id"] for u in found] == ["b", "c"]  # unknown ids are skipped
    assert_error(await sdk(h, "GET", "/client/user/imusers", "a", im_user_ids="x"), 400)


@pytest.mark.both_backends
async def test_a_lapsed_rest_heartbeat_is_404_in_docs_and_500_in_original(
    make_harness: HarnessFactory,
) -> None:
    for profile, status in (("docs", 404), ("original", 500)):
        h = await make_harness({"compat": {"profile": profile}})
        live_id, _ = await live_room(h, "anchor")
        assert_ok(await sdk(h, "POST", f"/client/live/room/user/{live_id}", "viewer"))
        h.advance(h.settings.presence.timeout + 1)  # the viewer's network dropped
        beat = await sdk(h, "GET", f"/client/live/room/heartbeat/{live_id}", "viewer")
        assert_error(beat, status, status)
        if profile == "original":
            assert beat.body["message"] == "not in room: join again"
        # What the original SDK does on that 500: join again, and it is counted again.
        assert_ok(await sdk(h, "POST", f"/client/live/room/user/{live_id}", "viewer"))
        assert_ok(await sdk(h, "GET", f"/client/live/room/heartbeat/{live_id}", "viewer"))


async def test_relay_times_and_accept_mode_follow_the_profile(
    make_harness: HarnessFactory,
) -> None:
    docs = await make_harness()
    original = await make_harness(ORIGINAL)
    for h in (docs, original):
        room_a, _ = await live_room(h, "alice")
        room_b, _ = await live_room(h, "bob")
        body = {"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": "bob"}
        started = assert_ok(await h.call("POST", "/client/relay/start", "alice", json=body))
        relay_id = started["relay_id"]
        relay = assert_ok(await sdk(h, "GET", f"/client/relay/{relay_id}", "bob"))
        if h is docs:
            assert started["relay_status"] == 0  # invite: the receiver must accept
            assert (relay["start_at"], relay["stop_at"]) == ("", "")
            assert "created_at" not in relay
        else:
            assert started["relay_status"] == 1  # original: accept_mode defaults to auto
            assert relay["start_at"] == int(h.clock.now()) and relay["stop_at"] is None
            assert relay["created_at"] == int(h.clock.now())
            assert_ok(await h.call("POST", f"/client/relay/{relay_id}/stop", "alice"))
            stopped = assert_ok(await sdk(h, "GET", f"/client/relay/{relay_id}", "bob"))
            assert isinstance(stopped["stop_at"], int)
    explicit = await make_harness({**ORIGINAL, "relay": {"accept_mode": "invite"}})
    assert explicit.settings.relay.accept_mode == "invite"  # a configured mode is kept


async def test_original_adds_what_the_sdks_read(make_harness: HarnessFactory) -> None:
    h = await make_harness(ORIGINAL)
    live_id, started = await live_room(h, "anchor")
    assert (started["total_count"], started["total_mics"]) == (1, 1)
    profile = assert_ok(await sdk(h, "GET", "/client/user/profile", "anchor"))
    assert profile["im_password"] == ""
    docs = await make_harness()
    _, plain = await live_room(docs, "anchor")
    assert "total_count" not in plain and "total_mics" not in plain
