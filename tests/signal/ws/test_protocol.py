"""The sans-I/O frame rules of protocol.py, fed strings directly."""

from __future__ import annotations

import orjson

from livesignal.signal.model.errors import NotFound
from livesignal.signal.ws.protocol import (
    Malformed,
    Request,
    error_frame,
    parse_frame,
    reply_frame,
)


def test_requests_parse_with_int_or_string_ids_and_default_data() -> None:
    assert parse_frame('{"id": 1, "type": "room.info", "data": {"live_id": "x"}}') == Request(
        1, "room.info", {"live_id": "x"}
    )
    assert parse_frame('{"id": "a-1", "type": "user.profile"}') == Request(
        "a-1", "user.profile", {}
    )


def test_malformed_frames_name_what_is_wrong() -> None:
    unreadable = parse_frame("{")
    assert isinstance(unreadable, Malformed) and unreadable.id is None
    no_type = parse_frame('{"id": 3}')
    assert isinstance(no_type, Malformed) and no_type.id == 3 and "type" in no_type.message
    bad_id = parse_frame('{"id": 1.5, "type": "x"}')
    assert isinstance(bad_id, Malformed) and bad_id.id is None
    long_id = parse_frame(orjson.dumps({"id": "x" * 200, "type": "x"}).decode())
    assert isinstance(long_id, Malformed)


def test_reply_frames() -> None:
    assert orjson.loads(reply_frame(4, {"a": 1})) == {
        "id": 4,
        "type": "reply",
        "code": 0,
        "message": "success",
        "data": {"a": 1},
    }
    error = orjson.loads(error_frame("q", NotFound("room not found")))
    assert error == {
        "id": "q",
        "type": "reply",
        "code": 404,
        "message": "room not found",
        "data": None,
    }
