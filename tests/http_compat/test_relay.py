"""PROTOCOL §3.5 over REST: cross-room PK (relay) and its status machine."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.conftest import Harness, HarnessFactory
from tests.rest_helpers import (
    RELAY_FIELDS,
    assert_error,
    assert_ok,
    china_time,
    create_room,
    hmac_sha1_b64,
    info,
    live_room,
)

RTC = {"app_id": "pk-app", "access_key": "pk-ak", "secret_key": "pk-sk", "token_ttl": 7200}


@pytest.fixture
async def h(make_harness: HarnessFactory) -> Harness:
    return await make_harness({"rtc": RTC})


@pytest.fixture
async def auto_h(make_harness: HarnessFactory) -> Harness:
    return await make_harness({"rtc": RTC, "relay": {"accept_mode": "auto"}})


async def two_rooms(h: Harness) -> tuple[str, str]:
    """Room A anchored by alice, room B by bob, both live."""
    return await live_room(h, "alice"), await live_room(h, "bob")


async def start(h: Harness, room_a: str, room_b: str, caller: str = "alice") -> dict[str, Any]:
    body = {"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": "bob"}
    data: dict[str, Any] = assert_ok(await h.call("POST", "/client/relay/start", caller, json=body))
    return data


async def relay(h: Harness, relay_id: str, viewer: str = "carol") -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(await h.call("GET", f"/client/relay/{relay_id}", viewer))
    return data


async def act(h: Harness, user: str, relay_id: str, action: str, **body: Any) -> Any:
    reply = await h.call(
        "POST", f"/client/relay/{relay_id}/{action}", user, json=body if body else None
    )
    return assert_ok(reply)


async def established(h: Harness) -> tuple[str, str, str]:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    await act(h, "bob", relay_id, "accept")
    return room_a, room_b, relay_id


def decode_rtc_token(token: str, now: float) -> dict[str, Any]:
    """Check "<ak>:<b64(HMAC-SHA1(sk, enc))>:<enc>" by hand and return the JSON in enc."""
    access_key, sign, enc = token.split(":")
    assert access_key == RTC["access_key"]
    assert sign == hmac_sha1_b64(str(RTC["secret_key"]), enc)
    assert len(enc) % 4 == 0  # URL-safe base64 WITH padding
    payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(enc))
    assert set(payload) == {"appId", "roomName", "userId", "expireAt", "permission"}
    assert payload["appId"] == RTC["app_id"]
    assert payload["permission"] == "user"
    assert payload["expireAt"] == int(now) + int(RTC["token_ttl"])  # type: ignore[call-overload]
    return payload


# --- start and the invitation ---------------------------------------------------------------


@pytest.mark.both_backends
async def test_start_in_invite_mode_waits_for_the_receiver(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    reply = await start(h, room_a, room_b)
    assert set(reply) == {"relay_id", "relay_status", "relay_token"}
    assert (reply["relay_status"], reply["relay_token"]) == (0, "")
    shown = await relay(h, reply["relay_id"])
    assert set(shown) == RELAY_FIELDS
    assert shown == {
        "sid": reply["relay_id"],
        "init_user_id": "alice",
        "init_room_id": room_a,
        "recv_room_id": room_b,
        "recv_user_id": "bob",
        "status": 0,
        "start_at": "",
        "stop_at": "",
        "extends": {},
        "reason": "",
    }
    # An invitation is not a PK yet.
    assert (await info(h, room_a))["pk_id"] == "" and (await info(h, room_b))["pk_id"] == ""


@pytest.mark.both_backends
async def test_pending_lists_invitations_for_the_receiver_only(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    pending = assert_ok(await h.call("GET", "/client/relay/pending", "bob"))
    assert [r["sid"] for r in pending["list"]] == [relay_id]
    assert set(pending["list"][0]) == RELAY_FIELDS
    for other in ("alice", "carol"):
        assert assert_ok(await h.call("GET", "/client/relay/pending", other)) == {"list": []}
    await act(h, "bob", relay_id, "accept")
    assert assert_ok(await h.call("GET", "/client/relay/pending", "bob")) == {"list": []}


@pytest.mark.both_backends
async def test_accept_establishes_the_relay(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    h.advance(3)
    accepted = await act(h, "bob", relay_id, "accept")
    assert (accepted["relay_id"], accepted["relay_status"]) == (relay_id, 1)
    # The receiver's token pushes into the OTHER room: the initiator's.
    grant = decode_rtc_token(accepted["relay_token"], h.clock.now())
    assert (grant["roomName"], grant["userId"]) == (room_a, "bob")
    shown = await relay(h, relay_id)
    assert (shown["status"], shown["start_at"], shown["stop_at"]) == (
        1,
        china_time(h.clock.now()),
        "",
    )
    assert (await info(h, room_a))["pk_id"] == relay_id
    assert (await info(h, room_b))["pk_id"] == relay_id


@pytest.mark.both_backends
async def test_reject_ends_the_invitation_with_status_5(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    assert await act(h, "bob", relay_id, "reject", reason="busy right now") == {}
    shown = await relay(h, relay_id)
    assert (shown["status"], shown["reason"], shown["stop_at"]) == (
        5,
        "rejected",
        china_time(h.clock.now()),
    )
    # Both rooms are free again.
    assert (await start(h, room_a, room_b))["relay_status"] == 0


async def test_reject_without_a_body(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    assert_ok(await h.call("POST", f"/client/relay/{relay_id}/reject", "bob"))
    assert (await relay(h, relay_id))["status"] == 5


@pytest.mark.both_backends
async def test_cancel_by_the_initiator(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    assert await act(h, "alice", relay_id, "cancel") == {}
    shown = await relay(h, relay_id)
    assert (shown["status"], shown["reason"], shown["stop_at"]) == (
        6,
        "canceled",
        china_time(h.clock.now()),
    )
    assert assert_ok(await h.call("GET", "/client/relay/pending", "bob")) == {"list": []}


@pytest.mark.parametrize(
    ("action", "wrong_party"),
    [
        ("accept", "alice"),
        ("reject", "alice"),
        ("cancel", "bob"),
        ("accept", "carol"),
        ("reject", "carol"),
        ("cancel", "carol"),
    ],
)
async def test_answering_an_invitation_is_for_the_right_party(
    h: Harness, action: str, wrong_party: str
) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    assert_error(await h.call("POST", f"/client/relay/{relay_id}/{action}", wrong_party), 403)
    assert (await relay(h, relay_id))["status"] == 0


@pytest.mark.parametrize(
    ("action", "party"), [("accept", "bob"), ("reject", "bob"), ("cancel", "alice")]
)
async def test_answering_is_only_from_status_0(h: Harness, action: str, party: str) -> None:
    _, _, relay_id = await established(h)
    assert_error(await h.call("POST", f"/client/relay/{relay_id}/{action}", party), 409, 601)
    assert (await relay(h, relay_id))["status"] == 1


@pytest.mark.both_backends
async def test_invitation_times_out(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    created = h.clock.now()
    h.advance(29)
    await h.sweep()
    assert (await relay(h, relay_id))["status"] == 0
    h.advance(1)
    await h.sweep()
    shown = await relay(h, relay_id)
    assert (shown["status"], shown["reason"], shown["stop_at"]) == (
        6,
        "timeout",
        china_time(created + 30),
    )
    assert_error(await h.call("POST", f"/client/relay/{relay_id}/accept", "bob"), 409, 601)
    assert assert_ok(await h.call("GET", "/client/relay/pending", "bob")) == {"list": []}
    # The rooms are free for a new relay.
    assert (await start(h, room_a, room_b))["relay_status"] == 0


async def test_invite_timeout_follows_the_settings(make_harness: HarnessFactory) -> None:
    h = await make_harness({"relay": {"invite_timeout": 5.0}})
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    h.advance(5)
    await h.sweep()
    assert (await relay(h, relay_id))["reason"] == "timeout"


@pytest.mark.both_backends
async def test_an_accepted_invitation_does_not_time_out(h: Harness) -> None:
    _, _, relay_id = await established(h)
    h.advance(300)
    await h.sweep()
    assert (await relay(h, relay_id))["status"] == 1


# --- auto accept -------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_auto_mode_starts_at_status_1(auto_h: Harness) -> None:
    room_a, room_b = await two_rooms(auto_h)
    reply = await start(auto_h, room_a, room_b)
    assert reply["relay_status"] == 1
    grant = decode_rtc_token(reply["relay_token"], auto_h.clock.now())
    assert (grant["roomName"], grant["userId"]) == (room_b, "alice")
    shown = await relay(auto_h, reply["relay_id"])
    assert (shown["status"], shown["start_at"]) == (1, china_time(auto_h.clock.now()))
    assert (await info(auto_h, room_a))["pk_id"] == reply["relay_id"]
    assert (await info(auto_h, room_b))["pk_id"] == reply["relay_id"]
    assert assert_ok(await auto_h.call("GET", "/client/relay/pending", "bob")) == {"list": []}
    assert_error(
        await auto_h.call("POST", f"/client/relay/{reply['relay_id']}/accept", "bob"), 409, 601
    )
    # No invitation to time out.
    auto_h.advance(60)
    await auto_h.sweep()
    assert (await relay(auto_h, reply["relay_id"]))["status"] == 1


# --- start errors --------------------------------------------------------------------------


async def test_start_with_an_unknown_room_is_404(h: Harness) -> None:
    room_a, _ = await two_rooms(h)
    body = {"init_room_id": room_a, "recv_room_id": "live_nope", "recv_user_id": "bob"}
    assert_error(await h.call("POST", "/client/relay/start", "alice", json=body), 404)
    body = {"init_room_id": "live_nope", "recv_room_id": room_a, "recv_user_id": "alice"}
    assert_error(await h.call("POST", "/client/relay/start", "bob", json=body), 404)
    # 404 before 403: an outsider naming an unknown room.
    body = {"init_room_id": room_a, "recv_room_id": "live_nope", "recv_user_id": "bob"}
    assert_error(await h.call("POST", "/client/relay/start", "mallory", json=body), 404)


async def test_start_by_someone_not_anchoring_the_init_room_is_403(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    body = {"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": "bob"}
    assert_error(await h.call("POST", "/client/relay/start", "mallory", json=body), 403)
    assert_error(await h.call("POST", "/client/relay/start", "bob", json=body), 403)


async def test_start_state_errors_are_601(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    created_c = (await create_room(h, "carol"))["live_id"]
    ended_d = await live_room(h, "dave")
    assert_ok(await h.call("POST", f"/client/live/room/{ended_d}", "dave"))
    cases = [
        (room_a, room_b, "carol"),  # recv_user_id is not the anchor of recv_room_id
        (room_a, room_a, "alice"),  # same room
        (room_a, created_c, "carol"),  # receiver's room not live
        (room_a, ended_d, "dave"),  # receiver's room ended
    ]
    for init_room, recv_room, recv_user in cases:
        body = {"init_room_id": init_room, "recv_room_id": recv_room, "recv_user_id": recv_user}
        reply = await h.call("POST", "/client/relay/start", "alice", json=body)
        assert_error(reply, 409, 601)
    # The initiator's own room must be live too.
    body = {"init_room_id": created_c, "recv_room_id": room_a, "recv_user_id": "alice"}
    assert_error(await h.call("POST", "/client/relay/start", "carol", json=body), 409, 601)


async def test_same_anchor_on_both_sides_is_601(h: Harness) -> None:
    room_a = await live_room(h, "alice")
    admin = h.token("moderator", role="admin")
    other = (await create_room(h, "alice"))["live_id"]
    assert_ok(await h.call("PUT", f"/client/live/room/{other}", token=admin))
    body = {"init_room_id": room_a, "recv_room_id": other, "recv_user_id": "alice"}
    assert_error(await h.call("POST", "/client/relay/start", "alice", json=body), 409, 601)


@pytest.mark.both_backends
async def test_a_room_with_an_active_relay_is_busy(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    room_c = await live_room(h, "carol")
    first = (await start(h, room_a, room_b))["relay_id"]
    # Invited (status 0) already occupies both rooms, from either side.
    for caller, init_room, recv_room, recv_user in [
        ("carol", room_c, room_b, "bob"),
        ("carol", room_c, room_a, "alice"),
        ("alice", room_a, room_c, "carol"),
        ("bob", room_b, room_c, "carol"),
    ]:
        body = {"init_room_id": init_room, "recv_room_id": recv_room, "recv_user_id": recv_user}
        assert_error(await h.call("POST", "/client/relay/start", caller, json=body), 409, 601)
    await act(h, "bob", first, "accept")
    body = {"init_room_id": room_c, "recv_room_id": room_a, "recv_user_id": "alice"}
    assert_error(await h.call("POST", "/client/relay/start", "carol", json=body), 409, 601)
    await act(h, "alice", first, "stop")
    assert (
        assert_ok(await h.call("POST", "/client/relay/start", "carol", json=body))["relay_status"]
        == 0
    )


# --- the established relay: token, started, stop, extends ----------------------------------


async def test_token_for_either_anchor_into_the_other_room(h: Harness) -> None:
    room_a, room_b, relay_id = await established(h)
    h.advance(10)
    for user, other_room in (("alice", room_b), ("bob", room_a)):
        reply = assert_ok(await h.call("GET", f"/client/relay/{relay_id}/token", user))
        assert (reply["relay_id"], reply["relay_status"]) == (relay_id, 1)
        grant = decode_rtc_token(reply["relay_token"], h.clock.now())
        assert (grant["roomName"], grant["userId"]) == (other_room, user)


async def test_token_rules(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    assert_error(await h.call("GET", f"/client/relay/{relay_id}/token", "alice"), 409, 601)
    await act(h, "bob", relay_id, "accept")
    assert_error(await h.call("GET", f"/client/relay/{relay_id}/token", "carol"), 403)
    await act(h, "bob", relay_id, "stop")
    assert_error(await h.call("GET", f"/client/relay/{relay_id}/token", "alice"), 409, 601)
    assert_error(await h.call("GET", "/client/relay/relay_nope/token", "alice"), 404)


@pytest.mark.both_backends
@pytest.mark.parametrize(
    "reports",
    [
        [("alice", 2), ("alice", 2), ("bob", 4), ("bob", 4), ("alice", 4)],
        [("bob", 3), ("bob", 3), ("alice", 4)],
    ],
    ids=["initiator-first", "receiver-first"],
)
async def test_started_reports_move_the_status(h: Harness, reports: list[tuple[str, int]]) -> None:
    room_a, _, relay_id = await established(h)
    for user, expected in reports:
        assert await act(h, user, relay_id, "started") == {}
        assert (await relay(h, relay_id))["status"] == expected
    assert (await info(h, room_a))["pk_id"] == relay_id


async def test_started_rules(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    assert_error(await h.call("POST", f"/client/relay/{relay_id}/started", "alice"), 409, 601)
    await act(h, "bob", relay_id, "accept")
    assert_error(await h.call("POST", f"/client/relay/{relay_id}/started", "carol"), 403)
    assert_error(await h.call("POST", "/client/relay/relay_nope/started", "alice"), 404)


@pytest.mark.both_backends
@pytest.mark.parametrize("status_before", [1, 2, 3, 4])
@pytest.mark.parametrize("stopper", ["alice", "bob"])
async def test_stop_from_any_established_status(
    h: Harness, status_before: int, stopper: str
) -> None:
    room_a, room_b, relay_id = await established(h)
    reporters = {1: [], 2: ["alice"], 3: ["bob"], 4: ["alice", "bob"]}[status_before]
    for user in reporters:
        await act(h, user, relay_id, "started")
    assert (await relay(h, relay_id))["status"] == status_before
    h.advance(42)
    assert await act(h, stopper, relay_id, "stop") == {}
    shown = await relay(h, relay_id)
    assert (shown["status"], shown["reason"], shown["stop_at"]) == (
        6,
        "stopped",
        china_time(h.clock.now()),
    )
    assert shown["start_at"] == china_time(h.clock.now() - 42)
    assert (await info(h, room_a))["pk_id"] == "" and (await info(h, room_b))["pk_id"] == ""


async def test_stop_rules(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    # From 0 the way out is cancel / reject.
    assert_error(await h.call("POST", f"/client/relay/{relay_id}/stop", "alice"), 409, 601)
    await act(h, "bob", relay_id, "accept")
    assert_error(await h.call("POST", f"/client/relay/{relay_id}/stop", "carol"), 403)
    assert (await relay(h, relay_id))["status"] == 1
    assert_error(await h.call("POST", "/client/relay/relay_nope/stop", "alice"), 404)


@pytest.mark.both_backends
async def test_extends_merge_for_either_anchor(h: Harness) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    assert await act(h, "alice", relay_id, "extends", extends={"score_a": "0", "mode": "pk"}) == {}
    await act(h, "bob", relay_id, "accept")
    await act(h, "bob", relay_id, "extends", extends={"score_a": "3", "score_b": "1"})
    assert (await relay(h, relay_id))["extends"] == {"score_a": "3", "mode": "pk", "score_b": "1"}


async def test_extends_rules(h: Harness) -> None:
    _, _, relay_id = await established(h)
    path = f"/client/relay/{relay_id}/extends"
    assert_error(await h.call("POST", path, "carol", json={"extends": {"x": "y"}}), 403)
    assert_error(await h.call("POST", path, "alice", json={"extends": {"x": 1}}), 400)
    assert_error(await h.call("POST", path, "alice", json={}), 400)
    assert_error(
        await h.call("POST", "/client/relay/relay_nope/extends", "alice", json={"extends": {}}),
        404,
    )
    assert (await relay(h, relay_id))["extends"] == {}


@pytest.mark.parametrize("ending", ["reject", "cancel", "stop"])
async def test_final_statuses_refuse_every_change(h: Harness, ending: str) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    if ending == "stop":
        await act(h, "bob", relay_id, "accept")
    await act(h, {"reject": "bob", "cancel": "alice", "stop": "alice"}[ending], relay_id, ending)
    final = await relay(h, relay_id)
    assert final["status"] in (5, 6)
    for user, action, body in [
        ("bob", "accept", None),
        ("bob", "reject", None),
        ("alice", "cancel", None),
        ("alice", "started", None),
        ("bob", "started", None),
        ("alice", "stop", None),
        ("bob", "stop", None),
        ("alice", "extends", {"extends": {"k": "v"}}),
    ]:
        reply = await h.call("POST", f"/client/relay/{relay_id}/{action}", user, json=body)
        assert_error(reply, 409, 601)
    # 403 before 601: an outsider is refused for who they are.
    assert_error(await h.call("POST", f"/client/relay/{relay_id}/stop", "carol"), 403)
    assert await relay(h, relay_id) == final


# --- rooms ending end their relays ---------------------------------------------------------


@pytest.mark.both_backends
@pytest.mark.parametrize("how", ["stop-post", "stop-delete", "delete"])
@pytest.mark.parametrize("which", ["init", "recv"])
@pytest.mark.parametrize("accepted", [False, True], ids=["invited", "established"])
async def test_ending_a_room_ends_its_relay(
    h: Harness, how: str, which: str, accepted: bool
) -> None:
    room_a, room_b = await two_rooms(h)
    relay_id = (await start(h, room_a, room_b))["relay_id"]
    if accepted:
        await act(h, "bob", relay_id, "accept")
    anchor, ended, other = ("alice", room_a, room_b) if which == "init" else ("bob", room_b, room_a)
    h.advance(7)
    method, path = {
        "stop-post": ("POST", f"/client/live/room/{ended}"),
        "stop-delete": ("DELETE", f"/client/live/room/{ended}"),
        "delete": ("DELETE", f"/client/live/room/instance/{ended}"),
    }[how]
    assert_ok(await h.call(method, path, anchor))
    shown = await relay(h, relay_id)
    assert (shown["status"], shown["reason"], shown["stop_at"]) == (
        6,
        "room_ended",
        china_time(h.clock.now()),
    )
    assert (await info(h, other))["pk_id"] == ""
    assert assert_ok(await h.call("GET", "/client/relay/pending", "bob")) == {"list": []}
    # The surviving room is free for a new relay.
    room_c = await live_room(h, "carol")
    other_anchor = "bob" if anchor == "alice" else "alice"
    body = {"init_room_id": room_c, "recv_room_id": other, "recv_user_id": other_anchor}
    assert_ok(await h.call("POST", "/client/relay/start", "carol", json=body))


@pytest.mark.both_backends
async def test_anchor_timeout_ends_the_relay(make_harness: HarnessFactory) -> None:
    h = await make_harness({"rtc": RTC, "presence": {"anchor_offline_close": 30.0}})
    room_a, room_b, relay_id = await established(h)
    for _ in range(0, 15 + 30 + 5, 5):  # alice lapses after 15 s, her room ends 30 s later
        h.advance(5)
        await h.call("GET", f"/client/live/room/heartbeat/{room_b}", "bob")
        await h.sweep()
    assert (await info(h, room_a))["live_status"] == 2
    assert (await info(h, room_b))["live_status"] == 1
    shown = await relay(h, relay_id)
    assert (shown["status"], shown["reason"]) == (6, "room_ended")
    assert (await info(h, room_b))["pk_id"] == ""
