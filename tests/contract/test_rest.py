"""PROTOCOL §3, black box: the REST layer through its public surface only.

Expected values are derived from the contract (hashlib/hmac/base64/json by hand), never from
the server's own helpers."""

from __future__ import annotations

from typing import Any

import pytest

from livesignal.client import SignalError
from tests.conftest import Connect, Harness
from tests.contract.helpers import (
    check_paged,
    check_room,
)
from tests.rest_helpers import (
    assert_error,
    assert_ok,
    create_room,
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


# --- 3.1 errors: check order and what each transport answers ------------------------------------


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
    # Even a body that is no JSON at all is not looked at before the token.
    broken = {"data": b"{broken", "headers": {"Content-Type": "application/json"}}
    assert_error(await harness.call("POST", "/client/live/room/instance", **broken), 401)
    reply = await harness.call("POST", "/client/live/room/instance", token=expired, **broken)
    assert_error(reply, 401, 499)


async def test_each_kind_of_error_reaches_rest_and_sockets_alike(
    harness: Harness, connect: Connect
) -> None:
    """The operation table decides 400, 404, 403 and 601, in that order (tested once, without
    a transport, in tests/signal/services/test_operations.py); REST answers each in the
    envelope with its HTTP status, and a socket in an error reply with the same code."""
    h = harness
    created = await create_room(h, "alice")
    room = created["live_id"]
    # (HTTP status, code): 400, 404, 403 and 601 (HTTP 409)
    expected = [(400, 400), (404, 404), (403, 403), (409, 601)]
    over_rest: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("POST", "/client/live/room/instance", "alice", {"title": ""}),
        ("GET", "/client/live/room/info/live_nope", "bob", None),
        ("PUT", f"/client/live/room/{room}", "bob", None),
        ("POST", f"/client/live/room/{room}", "alice", None),  # not live yet
    ]
    over_sockets: list[tuple[str, str, dict[str, Any]]] = [
        ("alice", "room.create", {"title": ""}),
        ("bob", "room.info", {"live_id": "live_nope"}),
        ("bob", "room.start", {"live_id": room}),
        ("alice", "room.stop", {"live_id": room}),
    ]
    for (status, code), (method, path, user, body) in zip(expected, over_rest, strict=True):
        assert_error(await h.call(method, path, user, json=body), status, code)
    sockets = {"alice": await connect(h, "alice"), "bob": await connect(h, "bob")}
    for (_, code), (user, op, data) in zip(expected, over_sockets, strict=True):
        with pytest.raises(SignalError) as refused:
            await sockets[user].request(op, **data)
        assert refused.value.code == code, op
        assert refused.value.message and "Traceback" not in refused.value.message
    assert (await info(h, room))["live_status"] == 0  # nothing was done


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


# --- 3.3 presence ---------------------------------------------------------------------------------


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
