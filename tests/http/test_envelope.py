"""The REST envelope (livesignal/http/envelope.py, PROTOCOL §3.1): request ids, bodies, and
failures inside the server; tokens on REST (§2)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import jwt
import orjson
import pytest

from tests.conftest import JWT_SECRET, Harness
from tests.rest_helpers import assert_error, assert_ok, create_room, live_room

CREATE = "/client/live/room/instance"


def unsigned_token(claims: dict[str, object]) -> str:
    """A JWT with "alg": "none" and no signature: must never be accepted."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# --- envelope and request ids ------------------------------------------------------------


async def test_success_envelope_has_request_id_code_message_data(harness: Harness) -> None:
    reply = await harness.call("GET", "/client/user/profile", "alice")
    assert set(reply.body) == {"request_id", "code", "message", "data"}
    assert reply.body["code"] == 0 and reply.body["message"] == "success"
    assert reply.headers["Content-Type"].startswith("application/json")


async def test_operation_with_nothing_to_return_has_empty_data(harness: Harness) -> None:
    live_id = await live_room(harness, "alice")
    stopped = await harness.call("POST", f"/client/live/room/{live_id}", "alice")
    assert stopped.status == 200
    assert stopped.body["data"] == {}


async def test_x_reqid_is_echoed_in_body_and_header(harness: Harness) -> None:
    reply = await harness.call(
        "GET", "/client/user/profile", "alice", headers={"X-Reqid": "req-42"}
    )
    assert reply.body["request_id"] == "req-42"
    assert reply.headers["X-Reqid"] == "req-42"


async def test_x_reqid_is_echoed_on_errors_too(harness: Harness) -> None:
    unauthorized = await harness.call("GET", "/client/user/profile", headers={"X-Reqid": "req-401"})
    assert_error(unauthorized, 401)
    assert unauthorized.body["request_id"] == "req-401"
    assert unauthorized.headers["X-Reqid"] == "req-401"
    missing = await harness.call(
        "GET", "/client/live/room/info/live_nope", "alice", headers={"X-Reqid": "req-404"}
    )
    assert_error(missing, 404)
    assert (missing.body["request_id"], missing.headers["X-Reqid"]) == ("req-404", "req-404")


async def test_request_id_is_generated_when_absent_and_unique(harness: Harness) -> None:
    first = await harness.call("GET", "/client/user/profile", "alice")
    second = await harness.call("GET", "/client/user/profile", "alice")
    for reply in (first, second):
        assert reply.body["request_id"]
        assert reply.headers["X-Reqid"] == reply.body["request_id"]
    assert first.body["request_id"] != second.body["request_id"]


async def test_unknown_rest_path_answers_404_in_the_envelope(harness: Harness) -> None:
    reply = await harness.call(
        "GET", "/client/live/nothing/here", "alice", headers={"X-Reqid": "r-unknown"}
    )
    assert_error(reply, 404)
    assert reply.body["request_id"] == "r-unknown"


# --- tokens --------------------------------------------------------------------------------


async def test_missing_token_is_401(harness: Harness) -> None:
    assert_error(await harness.call("GET", "/client/user/profile"), 401, 401)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "Bearer ",
        jwt.encode({"UserId": "alice", "exp": 4_000_000_000}, "another-secret-" * 3, "HS256"),
        jwt.encode({"AppId": "x", "exp": 4_000_000_000}, JWT_SECRET, "HS256"),
        unsigned_token({"UserId": "alice", "exp": 4_000_000_000}),
    ],
    ids=["garbage", "empty-bearer", "wrong-secret", "no-user-id", "alg-none"],
)
async def test_invalid_token_is_401(harness: Harness, token: str) -> None:
    reply = await harness.call("GET", "/client/user/profile", token=token)
    assert_error(reply, 401, 401)


async def test_expired_token_is_http_401_code_499(harness: Harness) -> None:
    token = harness.token("alice", ttl=60)
    assert_ok(await harness.call("GET", "/client/user/profile", token=token))
    harness.advance(61)
    reply = await harness.call("GET", "/client/user/profile", token=token)
    assert_error(reply, 401, 499)


async def test_token_accepted_with_and_without_bearer(harness: Harness) -> None:
    token = harness.token("alice")
    for header in (token, f"Bearer {token}", f"bearer {token}"):
        reply = await harness.call("GET", "/client/user/profile", token=header)
        assert assert_ok(reply)["user_id"] == "alice"


async def test_original_server_claim_names_are_accepted(harness: Harness) -> None:
    """A token made by the original server (its claim names, our secret) keeps working."""
    exp = int(harness.clock.now()) + 3600
    claims = {"UserId": "legacy", "AppId": "app1", "DeviceId": "dev1", "Role": "", "exp": exp}
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    assert (
        assert_ok(await harness.call("GET", "/client/user/profile", token=token))["user_id"]
        == "legacy"
    )


async def test_harness_token_carries_the_documented_claims(harness: Harness) -> None:
    token = harness.token("alice", role="admin", ttl=100)
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["UserId"] == "alice"
    assert claims["Role"] == "admin"
    assert claims["exp"] == int(harness.clock.now()) + 100
    assert {"AppId", "DeviceId"} <= set(claims)


# --- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"title": "x",}', b"[1, 2]", b'"a string"', b"null", b"\xff\xfe{}"],
    ids=["broken", "trailing-comma", "array", "string", "null", "not-utf8"],
)
async def test_malformed_json_body_is_400(harness: Harness, raw: bytes) -> None:
    reply = await harness.call(
        "POST", CREATE, "alice", data=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 400)


async def test_body_of_exactly_64_kib_is_accepted(harness: Harness) -> None:
    # Padded with a field the operation ignores: every stored value has a smaller bound (§7).
    envelope = orjson.dumps({"title": "t", "padding": ""})
    padding = "n" * (64 * 1024 - len(envelope))
    raw = orjson.dumps({"title": "t", "padding": padding})
    assert len(raw) == 64 * 1024
    reply = await harness.call(
        "POST", CREATE, "alice", data=raw, headers={"Content-Type": "application/json"}
    )
    assert assert_ok(reply)["title"] == "t"


async def test_body_over_64_kib_is_400(harness: Harness) -> None:
    raw = orjson.dumps({"title": "t", "notice": "n" * (64 * 1024)})
    reply = await harness.call(
        "POST", CREATE, "alice", data=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 400)
    listed = assert_ok(await harness.call("GET", "/client/live/room", "alice"))
    assert listed["total_count"] == 0, "the oversized create must not have happened"


async def test_chunked_body_over_64_kib_is_400(harness: Harness) -> None:
    """No Content-Length to trust: the limit holds while streaming."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "t", "notice": "'
        for _ in range(20):
            yield b"n" * 4096
        yield b'"}'

    async with harness.session.post(
        harness.base_url + CREATE,
        data=chunks(),
        headers={"Authorization": harness.token("alice"), "Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["code"] == 400


async def test_ill_typed_field_is_400(harness: Harness) -> None:
    for body in ({"title": 5}, {"title": "t", "extends": {"a": 1}}, {"title": "t", "notice": []}):
        assert_error(await harness.call("POST", CREATE, "alice", json=body), 400)


# --- check order: 401/499, 400, 404, 403, 601 ------------------------------------------------


async def test_401_before_400(harness: Harness) -> None:
    reply = await harness.call(
        "POST", CREATE, data=b"{broken", headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 401)
    expired = harness.token("alice", ttl=1)
    harness.advance(2)
    reply = await harness.call(
        "POST", CREATE, token=expired, data=b"{broken", headers={"Content-Type": "text/plain"}
    )
    assert_error(reply, 401, 499)


async def test_401_before_404(harness: Harness) -> None:
    assert_error(await harness.call("GET", "/client/live/room/info/live_nope"), 401)


async def test_400_before_404(harness: Harness) -> None:
    missing_extends = await harness.call(
        "PUT", "/client/live/room/extends", "alice", json={"live_id": "live_nope"}
    )
    assert_error(missing_extends, 400)
    bad_page = await harness.call(
        "GET",
        "/client/live/room/user_list",
        "alice",
        params={"live_id": "live_nope", "page_size": "0"},
    )
    assert_error(bad_page, 400)
    relay_missing_field = await harness.call(
        "POST", "/client/relay/start", "alice", json={"init_room_id": "live_nope"}
    )
    assert_error(relay_missing_field, 400)


async def test_404_before_403(harness: Harness) -> None:
    """An outsider acting on a room that does not exist learns it does not exist."""
    for method, path in [
        ("PUT", "/client/live/room/live_nope"),
        ("POST", "/client/live/room/live_nope"),
        ("DELETE", "/client/live/room/live_nope"),
        ("DELETE", "/client/live/room/instance/live_nope"),
    ]:
        assert_error(await harness.call(method, path, "mallory"), 404)
    extends = await harness.call(
        "PUT",
        "/client/live/room/extends",
        "mallory",
        json={"live_id": "live_nope", "extends": {"a": "b"}},
    )
    assert_error(extends, 404)


async def test_403_before_601(harness: Harness) -> None:
    live_id = await live_room(harness, "alice")
    assert_ok(await harness.call("POST", f"/client/live/room/{live_id}", "alice"))
    # The room has ended: restarting or stopping it is a state error for its anchor...
    assert_error(await harness.call("PUT", f"/client/live/room/{live_id}", "alice"), 409, 601)
    assert_error(await harness.call("POST", f"/client/live/room/{live_id}", "alice"), 409, 601)
    # ...but a stranger is told first that it is not theirs.
    assert_error(await harness.call("PUT", f"/client/live/room/{live_id}", "mallory"), 403)
    assert_error(await harness.call("POST", f"/client/live/room/{live_id}", "mallory"), 403)
    assert_error(await harness.call("DELETE", f"/client/live/room/{live_id}", "mallory"), 403)


async def test_stop_of_a_created_room_is_601_http_409(harness: Harness) -> None:
    live_id = (await create_room(harness, "alice"))["live_id"]
    reply = await harness.call("POST", f"/client/live/room/{live_id}", "alice")
    assert_error(reply, 409, 601)


# --- failures inside the server --------------------------------------------------------------


async def test_a_crash_answers_500_in_the_envelope_without_a_traceback(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(*args: object, **kwargs: object) -> dict[str, object]:
        raise RuntimeError("secret internals at /srv/livesignal/rooms.py line 42")

    monkeypatch.setattr(harness.services.rooms, "info", crash)
    reply = await harness.call(
        "GET", "/client/live/room/info/live_x", "alice", headers={"X-Reqid": "boom"}
    )
    assert_error(reply, 500)
    assert "secret internals" not in reply.body["message"]
    assert (reply.body["request_id"], reply.headers["X-Reqid"]) == ("boom", "boom")


async def test_store_unreachable_is_503(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    async def unreachable(*args: object, **kwargs: object) -> dict[str, object]:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(harness.services.rooms, "list_live", unreachable)
    assert_error(await harness.call("GET", "/client/live/room/list", "alice"), 503)
