"""The REST envelope (livesignal/http/envelope.py, PROTOCOL §3.1): request ids, bodies, and
failures inside the server; tokens on REST (§2)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from tests.conftest import Harness
from tests.rest_helpers import assert_error, assert_ok

CREATE = "/client/live/room/instance"


# --- envelope and request ids ------------------------------------------------------------


async def test_success_envelope_has_request_id_code_message_data(harness: Harness) -> None:
    reply = await harness.call("GET", "/client/user/profile", "alice")
    assert set(reply.body) == {"request_id", "code", "message", "data"}
    assert reply.body["code"] == 0 and reply.body["message"] == "success"
    assert reply.headers["Content-Type"].startswith("application/json")


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


# --- tokens --------------------------------------------------------------------------------


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


# --- check order: 401/499, 400, 404, 403, 601 ------------------------------------------------


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
