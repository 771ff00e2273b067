"""PROTOCOL §2 user endpoints: profile, update (merge), get one, get many."""

from __future__ import annotations

import pytest

from tests.conftest import Harness
from tests.rest_helpers import USER_FIELDS, assert_error, assert_ok


@pytest.mark.both_backends
async def test_profile_creates_the_user_on_first_sight(harness: Harness) -> None:
    me = assert_ok(await harness.call("GET", "/client/user/profile", "alice"))
    assert set(me) == USER_FIELDS
    assert (me["user_id"], me["nick"], me["avatar"], me["extends"]) == ("alice", "alice", "", {})
    assert isinstance(me["im_userid"], int)
    assert isinstance(me["im_username"], str)


@pytest.mark.both_backends
async def test_im_userid_is_stable_and_distinct(harness: Harness) -> None:
    first = assert_ok(await harness.call("GET", "/client/user/profile", "alice"))["im_userid"]
    bob = assert_ok(await harness.call("GET", "/client/user/profile", "bob"))["im_userid"]
    assert_ok(await harness.call("PUT", "/client/user/user", "alice", json={"nick": "A"}))
    again = assert_ok(await harness.call("GET", "/client/user/profile", "alice"))["im_userid"]
    shown = assert_ok(await harness.call("GET", "/client/user/user/alice", "bob"))["im_userid"]
    assert first == again == shown != bob


@pytest.mark.both_backends
async def test_any_authenticated_request_creates_the_user(harness: Harness) -> None:
    assert_error(await harness.call("GET", "/client/user/user/newcomer", "alice"), 404)
    assert_ok(await harness.call("GET", "/client/live/room/list", "newcomer"))
    shown = assert_ok(await harness.call("GET", "/client/user/user/newcomer", "alice"))
    assert (shown["user_id"], shown["nick"]) == ("newcomer", "newcomer")


@pytest.mark.both_backends
async def test_update_merges_fields_and_extends(harness: Harness) -> None:
    assert_ok(
        await harness.call(
            "PUT",
            "/client/user/user",
            "alice",
            json={"nick": "Alice", "avatar": "https://a/1.png", "extends": {"a": "1", "b": "2"}},
        )
    )
    assert_ok(
        await harness.call(
            "PUT", "/client/user/user", "alice", json={"extends": {"b": "3", "c": "4"}}
        )
    )
    assert_ok(await harness.call("PUT", "/client/user/user", "alice", json={"nick": "Al"}))
    me = assert_ok(await harness.call("GET", "/client/user/profile", "alice"))
    assert (me["nick"], me["avatar"], me["extends"]) == (
        "Al",
        "https://a/1.png",
        {"a": "1", "b": "3", "c": "4"},
    )
    assert assert_ok(await harness.call("GET", "/client/user/user/alice", "bob")) == me


async def test_update_with_empty_body_changes_nothing(harness: Harness) -> None:
    before = assert_ok(await harness.call("GET", "/client/user/profile", "alice"))
    assert_ok(await harness.call("PUT", "/client/user/user", "alice", json={}))
    assert assert_ok(await harness.call("GET", "/client/user/profile", "alice")) == before


@pytest.mark.both_backends
async def test_get_many_users(harness: Harness) -> None:
    for user in ("a", "b", "c"):
        assert_ok(await harness.call("GET", "/client/user/profile", user))
    listed = assert_ok(
        await harness.call("GET", "/client/user/users", "a", params={"user_ids": "c,a"})
    )
    assert [u["user_id"] for u in listed] == ["c", "a"]  # data is an array over REST
    assert all(set(u) == USER_FIELDS for u in listed)
    with_unknown = assert_ok(
        await harness.call("GET", "/client/user/users", "a", params={"user_ids": "b,ghost"})
    )
    assert [u["user_id"] for u in with_unknown] == ["b"]
