"""PROTOCOL §3.2 and §3.4 over REST: the room endpoints of api-docs/live-room.md."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import Connect, Harness, HarnessFactory
from tests.rest_helpers import (
    CST,
    PAGE_FIELDS,
    ROOM_FIELDS,
    USER_FIELDS,
    assert_error,
    assert_ok,
    create_room,
    hmac_sha1_b64,
    info,
    join,
    live_room,
)

CREATE = "/client/live/room/instance"


def unix_cst(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST).timestamp())


async def listed(h: Harness, path: str, user: str = "viewer", **params: Any) -> dict[str, Any]:
    data: dict[str, Any] = assert_ok(
        await h.call("GET", path, user, params={k: str(v) for k, v in params.items()})
    )
    return data


def ids(page: dict[str, Any]) -> list[str]:
    return [room["live_id"] for room in page["list"]]


# --- create --------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_create_returns_the_documented_room_object(harness: Harness) -> None:
    room = await create_room(
        harness,
        "alice",
        title="Evening show",
        notice="tonight at 8",
        cover_url="https://img.example/c.png",
        extends={"age": "18"},
    )
    assert set(room) == ROOM_FIELDS
    assert set(room["anchor_info"]) == USER_FIELDS
    assert room["live_id"] and isinstance(room["live_id"], str)
    assert (room["title"], room["notice"], room["cover_url"]) == (
        "Evening show",
        "tonight at 8",
        "https://img.example/c.png",
    )
    assert room["extends"] == {"age": "18"}
    anchor = room["anchor_info"]
    assert (anchor["user_id"], anchor["nick"], anchor["avatar"], anchor["extends"]) == (
        "alice",
        "alice",
        "",
        {},
    )
    assert isinstance(anchor["im_userid"], int)
    assert room["live_status"] == 0
    assert room["anchor_status"] == 0 and room["online_count"] == 0
    assert (room["pv"], room["uv"], room["pk_id"]) == (0, 0, "")
    assert (room["start_time"], room["end_time"]) == (0, 0)
    assert isinstance(room["chat_id"], int)


@pytest.mark.both_backends
async def test_chat_id_differs_per_room(harness: Harness) -> None:
    chat_ids = {(await create_room(harness, f"anchor{i}"))["chat_id"] for i in range(5)}
    assert len(chat_ids) == 5


async def test_create_with_optional_fields_omitted(harness: Harness) -> None:
    room = assert_ok(await harness.call("POST", CREATE, "alice", json={"title": "t"}))
    assert (room["notice"], room["cover_url"], room["extends"]) == ("", "", {})


@pytest.mark.parametrize("title", ["x", "t" * 200, "直" * 200], ids=["1", "200", "200-cjk"])
async def test_title_of_1_to_200_characters_is_accepted(harness: Harness, title: str) -> None:
    room = assert_ok(await harness.call("POST", CREATE, "alice", json={"title": title}))
    assert room["title"] == title


async def test_scheduled_times_in_china_standard_time(harness: Harness) -> None:
    room = await create_room(
        harness, "alice", start_at="2021-12-02 11:11:11", end_at="2021-12-02 13:00:00"
    )
    # 11:11:11 in UTC+8 is 03:11:11 UTC.
    assert room["start_time"] == unix_cst("2021-12-02 11:11:11") == 1638414671
    assert room["end_time"] == unix_cst("2021-12-02 13:00:00")


async def test_scheduled_times_as_unix_seconds(harness: Harness) -> None:
    room = await create_room(harness, "alice", start_at=1656315406, end_at=1656319006)
    assert (room["start_time"], room["end_time"]) == (1656315406, 1656319006)


# --- start / stop / delete -----------------------------------------------------------------


@pytest.mark.both_backends
async def test_start_makes_the_room_live_and_the_anchor_present(harness: Harness) -> None:
    room = await create_room(harness, "alice", start_at="2021-12-02 11:11:11")
    live_id = room["live_id"]
    started = assert_ok(await harness.call("PUT", f"/client/live/room/{live_id}", "alice"))
    assert set(started) == ROOM_FIELDS | {"room_token"}  # the RTC room token of §3.4
    assert started["live_status"] == 1
    # start_time is now the actual start, no longer the schedule.
    assert started["start_time"] == int(harness.clock.now())
    assert started["anchor_status"] == 1
    assert (started["online_count"], started["pv"], started["uv"]) == (1, 1, 1)
    started.pop("room_token")
    assert await info(harness, live_id) == {**started, "push_url": ""}


@pytest.mark.both_backends
async def test_end_time_is_the_schedule_until_the_room_actually_ends(harness: Harness) -> None:
    live_id = await live_room(harness, "alice", end_at="2031-01-01 08:00:00")
    assert (await info(harness, live_id))["end_time"] == unix_cst("2031-01-01 08:00:00")
    harness.advance(60)
    assert_ok(await harness.call("POST", f"/client/live/room/{live_id}", "alice"))
    assert (await info(harness, live_id))["end_time"] == int(harness.clock.now())


@pytest.mark.both_backends
async def test_start_is_idempotent(harness: Harness) -> None:
    live_id = await live_room(harness, "alice")
    first = await info(harness, live_id)
    harness.advance(5)  # the anchor is still present: starting again is no new join
    again = assert_ok(await harness.call("PUT", f"/client/live/room/{live_id}", "alice"))
    assert again["live_status"] == 1
    assert again["start_time"] == first["start_time"]
    assert (again["pv"], again["uv"], again["online_count"]) == (1, 1, 1)


async def test_start_by_someone_else_is_403(harness: Harness) -> None:
    live_id = (await create_room(harness, "alice"))["live_id"]
    assert_error(await harness.call("PUT", f"/client/live/room/{live_id}", "bob"), 403)
    assert (await info(harness, live_id))["live_status"] == 0


@pytest.mark.both_backends
@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_stop_ends_the_room(harness: Harness, method: str) -> None:
    """POST is the documented stop; DELETE is what the original SDKs send."""
    live_id = await live_room(harness, "alice")
    harness.advance(125)
    reply = await harness.call(method, f"/client/live/room/{live_id}", "alice")
    assert assert_ok(reply) == {}
    room = await info(harness, live_id)
    assert room["live_status"] == 2
    assert room["end_time"] == int(harness.clock.now())
    assert room["start_time"] == int(harness.clock.now()) - 125
    # An ended room cannot be started again, nor stopped twice.
    assert_error(await harness.call("PUT", f"/client/live/room/{live_id}", "alice"), 409, 601)
    assert_error(await harness.call(method, f"/client/live/room/{live_id}", "alice"), 409, 601)


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_stop_by_someone_else_is_403(harness: Harness, method: str) -> None:
    live_id = await live_room(harness, "alice")
    assert_error(await harness.call(method, f"/client/live/room/{live_id}", "bob"), 403)
    assert (await info(harness, live_id))["live_status"] == 1


async def test_stop_of_a_room_not_yet_live_is_601(harness: Harness) -> None:
    live_id = (await create_room(harness, "alice"))["live_id"]
    for method in ("POST", "DELETE"):
        reply = await harness.call(method, f"/client/live/room/{live_id}", "alice")
        assert_error(reply, 409, 601)


@pytest.mark.both_backends
@pytest.mark.parametrize("live", [False, True], ids=["created", "live"])
async def test_delete_makes_the_room_not_found(harness: Harness, live: bool) -> None:
    live_id = (
        await live_room(harness, "alice")
        if live
        else (await create_room(harness, "alice"))["live_id"]
    )
    reply = await harness.call("DELETE", f"/client/live/room/instance/{live_id}", "alice")
    assert assert_ok(reply) == {}
    assert_error(await harness.call("GET", f"/client/live/room/info/{live_id}", "alice"), 404)
    for method, path in [
        ("PUT", f"/client/live/room/{live_id}"),
        ("POST", f"/client/live/room/{live_id}"),
        ("POST", f"/client/live/room/user/{live_id}"),
        ("DELETE", f"/client/live/room/instance/{live_id}"),
    ]:
        assert_error(await harness.call(method, path, "alice"), 404)
    assert (await listed(harness, "/client/live/room"))["total_count"] == 0
    assert (await listed(harness, "/client/live/room/list"))["total_count"] == 0


async def test_delete_by_someone_else_is_403(harness: Harness) -> None:
    live_id = await live_room(harness, "alice")
    assert_error(await harness.call("DELETE", f"/client/live/room/instance/{live_id}", "bob"), 403)
    assert (await info(harness, live_id))["live_status"] == 1


@pytest.mark.both_backends
async def test_an_ended_room_can_be_deleted(harness: Harness) -> None:
    live_id = await live_room(harness, "alice")
    assert_ok(await harness.call("POST", f"/client/live/room/{live_id}", "alice"))
    assert_ok(await harness.call("DELETE", f"/client/live/room/instance/{live_id}", "alice"))
    assert_error(await harness.call("GET", f"/client/live/room/info/{live_id}", "alice"), 404)


# --- admin, push_url and play URLs ----------------------------------------------------------


@pytest.mark.both_backends
async def test_admin_may_act_as_the_anchor(harness: Harness) -> None:
    admin = harness.token("moderator", role="admin")
    live_id = (await create_room(harness, "alice"))["live_id"]
    started = assert_ok(await harness.call("PUT", f"/client/live/room/{live_id}", token=admin))
    assert started["live_status"] == 1
    assert started["push_url"], "an admin acting as anchor sees push_url"
    # The admin is not the anchor: starting the room does not make alice present.
    assert started["anchor_status"] == 0
    assert_ok(
        await harness.call(
            "PUT",
            "/client/live/room/extends",
            token=admin,
            json={"live_id": live_id, "extends": {"flag": "reviewed"}},
        )
    )
    assert (await info(harness, live_id))["extends"] == {"flag": "reviewed"}
    assert_ok(await harness.call("POST", f"/client/live/room/{live_id}", token=admin))
    assert (await info(harness, live_id))["live_status"] == 2
    assert_ok(await harness.call("DELETE", f"/client/live/room/instance/{live_id}", token=admin))
    assert_error(await harness.call("GET", f"/client/live/room/info/{live_id}", "alice"), 404)


async def test_push_url_only_for_the_anchor_play_urls_for_all(harness: Harness) -> None:
    live_id = await live_room(harness, "alice")
    as_anchor = await info(harness, live_id, viewer="alice")
    as_viewer = await info(harness, live_id, viewer="bob")
    joined = await join(harness, "carol", live_id)
    assert as_anchor["push_url"].startswith(f"rtmp://127.0.0.1:1935/live/{live_id}?")
    assert as_viewer["push_url"] == "" and joined["push_url"] == ""
    for room in (as_anchor, as_viewer, joined):
        assert room["rtmp_url"] == f"rtmp://127.0.0.1:1935/live/{live_id}"
        assert room["flv_url"] == f"http://127.0.0.1:8088/live/{live_id}.flv"
        assert room["hls_url"] == f"http://127.0.0.1:8088/hls/{live_id}.m3u8"
    for path in ("/client/live/room", "/client/live/room/list"):
        (entry,) = (await listed(harness, path, user="bob"))["list"]
        assert entry["push_url"] == ""
        (own,) = (await listed(harness, path, user="alice"))["list"]
        assert own["push_url"] == as_anchor["push_url"]


@pytest.mark.both_backends
async def test_anchor_info_is_the_anchors_current_profile(harness: Harness) -> None:
    live_id = await live_room(harness, "alice")
    assert_ok(
        await harness.call(
            "PUT",
            "/client/user/user",
            "alice",
            json={"nick": "Alice A.", "avatar": "https://a/x.png", "extends": {"lvl": "3"}},
        )
    )
    anchor = (await info(harness, live_id))["anchor_info"]
    assert (anchor["nick"], anchor["avatar"], anchor["extends"]) == (
        "Alice A.",
        "https://a/x.png",
        {"lvl": "3"},
    )


# --- stream URL signing (§3.4), computed independently --------------------------------------

PUBLISH_KEY = "pk-secret"
RTC_AK, RTC_SK = "rtc-ak", "rtc-sk"


async def stream_harness(make_harness: HarnessFactory, security: str) -> Harness:
    return await make_harness(
        {
            "stream": {
                "security": security,
                "publish_key": PUBLISH_KEY,
                "publish_base": "rtmp://push.example.com:1935/myapp",
                "publish_ttl": 1800,
            },
            "rtc": {"access_key": RTC_AK, "secret_key": RTC_SK},
        }
    )


async def test_push_url_security_none(make_harness: HarnessFactory) -> None:
    h = await stream_harness(make_harness, "none")
    live_id = await live_room(h, "alice")
    url = (await info(h, live_id, viewer="alice"))["push_url"]
    assert url == f"rtmp://push.example.com:1935/myapp/{live_id}"


async def test_push_url_security_static(make_harness: HarnessFactory) -> None:
    h = await stream_harness(make_harness, "static")
    live_id = await live_room(h, "alice")
    url = (await info(h, live_id, viewer="alice"))["push_url"]
    assert url == f"rtmp://push.example.com:1935/myapp/{live_id}?key={PUBLISH_KEY}"


async def test_push_url_security_expiry(make_harness: HarnessFactory) -> None:
    h = await stream_harness(make_harness, "expiry")
    live_id = await live_room(h, "alice")
    url = (await info(h, live_id, viewer="alice"))["push_url"]
    expire = int(h.clock.now()) + 1800
    token = hmac_sha1_b64(PUBLISH_KEY, f"/myapp/{live_id}?expire={expire}")
    assert url == f"rtmp://push.example.com:1935/myapp/{live_id}?expire={expire}&token={token}"


async def test_push_url_security_expiry_sk(make_harness: HarnessFactory) -> None:
    h = await stream_harness(make_harness, "expiry_sk")
    live_id = await live_room(h, "alice")
    url = (await info(h, live_id, viewer="alice"))["push_url"]
    e = int(h.clock.now()) + 1800
    sign = hmac_sha1_b64(RTC_SK, f"/myapp/{live_id}?e={e}")
    assert url == f"rtmp://push.example.com:1935/myapp/{live_id}?e={e}&token={RTC_AK}:{sign}"


@pytest.mark.both_backends
async def test_push_url_expiry_follows_a_future_publish_expire_at(
    make_harness: HarnessFactory,
) -> None:
    h = await stream_harness(make_harness, "expiry")
    future = "2031-01-01 08:00:00"  # 2031-01-01 00:00:00 UTC
    live_id = await live_room(h, "alice", publish_expire_at=future)
    query = parse_qs(urlsplit((await info(h, live_id, viewer="alice"))["push_url"]).query)
    assert query["expire"] == [str(unix_cst(future))] == ["1924992000"]
    assert query["token"] == [hmac_sha1_b64(PUBLISH_KEY, f"/myapp/{live_id}?expire=1924992000")]


async def test_push_url_expiry_ignores_a_past_publish_expire_at(
    make_harness: HarnessFactory,
) -> None:
    h = await stream_harness(make_harness, "expiry")
    live_id = await live_room(h, "alice", publish_expire_at="2021-12-02 11:11:11")
    query = parse_qs(urlsplit((await info(h, live_id, viewer="alice"))["push_url"]).query)
    assert query["expire"] == [str(int(h.clock.now()) + 1800)]


# --- extends -------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_extends_update_merges(harness: Harness) -> None:
    live_id = (await create_room(harness, "alice", extends={"a": "1", "b": "2"}))["live_id"]
    reply = await harness.call(
        "PUT",
        "/client/live/room/extends",
        "alice",
        json={"live_id": live_id, "extends": {"b": "3", "c": "4"}},
    )
    assert assert_ok(reply) == {}
    room = await info(harness, live_id)
    assert room["extends"] == {"a": "1", "b": "3", "c": "4"}
    # PUT /client/live/room/extends is never a start of a room called "extends".
    assert room["live_status"] == 0


async def test_extends_update_by_someone_else_is_403(harness: Harness) -> None:
    live_id = (await create_room(harness, "alice", extends={"a": "1"}))["live_id"]
    reply = await harness.call(
        "PUT", "/client/live/room/extends", "bob", json={"live_id": live_id, "extends": {"a": "x"}}
    )
    assert_error(reply, 403)
    assert (await info(harness, live_id))["extends"] == {"a": "1"}


# --- list ----------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_list_shows_live_rooms_newest_start_first(harness: Harness) -> None:
    a = (await create_room(harness, "a"))["live_id"]
    b = (await create_room(harness, "b"))["live_id"]
    c = (await create_room(harness, "c"))["live_id"]
    created_only = (await create_room(harness, "d"))["live_id"]
    ended = await live_room(harness, "e")
    assert_ok(await harness.call("POST", f"/client/live/room/{ended}", "e"))
    # Start b, then a, then c; all within the same clock second (ties: later start first).
    for anchor, live_id in (("b", b), ("a", a), ("c", c)):
        assert_ok(await harness.call("PUT", f"/client/live/room/{live_id}", anchor))
    page = await listed(harness, "/client/live/room/list")
    assert set(page) == PAGE_FIELDS
    assert ids(page) == [c, a, b]
    assert created_only not in ids(page) and ended not in ids(page)
    assert (page["total_count"], page["page_total"], page["end_page"]) == (3, 1, True)
    assert all(set(room) == ROOM_FIELDS and room["live_status"] == 1 for room in page["list"])


async def test_list_paging(harness: Harness) -> None:
    rooms = [await live_room(harness, f"anchor{i}") for i in range(5)]
    newest_first = rooms[::-1]
    pages = [
        await listed(harness, "/client/live/room/list", page_num=n, page_size=2)
        for n in (1, 2, 3, 4)
    ]
    assert [ids(p) for p in pages] == [newest_first[0:2], newest_first[2:4], newest_first[4:], []]
    assert [p["end_page"] for p in pages] == [False, False, True, True]
    assert {(p["total_count"], p["page_total"]) for p in pages} == {(5, 3)}
    default = await listed(harness, "/client/live/room/list")
    assert ids(default) == newest_first and default["page_total"] == 1


async def test_empty_list(harness: Harness) -> None:
    page = await listed(harness, "/client/live/room/list")
    assert page == {"total_count": 0, "page_total": 0, "end_page": True, "list": []}


async def test_page_size_over_100_is_taken_as_100(harness: Harness) -> None:
    for i in range(101):
        await live_room(harness, f"anchor{i}")
    first = await listed(harness, "/client/live/room/list", page_size=500)
    assert len(first["list"]) == 100
    assert (first["total_count"], first["page_total"], first["end_page"]) == (101, 2, False)
    second = await listed(harness, "/client/live/room/list", page_size=500, page_num=2)
    assert len(second["list"]) == 1 and second["end_page"] is True
    default = await listed(harness, "/client/live/room", page_size=101)
    assert len(default["list"]) == 100


# --- search --------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_search_orders_live_then_created_and_skips_ended(harness: Harness) -> None:
    created_old = (await create_room(harness, "u1", title="Cooking"))["live_id"]
    live_early = await live_room(harness, "u2", title="Cooking live")
    created_new = (await create_room(harness, "u3", title="Cooking next"))["live_id"]
    ended = await live_room(harness, "u4", title="Cooking over")
    assert_ok(await harness.call("POST", f"/client/live/room/{ended}", "u4"))
    live_late_id = (await create_room(harness, "u5", title="Cooking late"))["live_id"]
    harness.advance(1)
    assert_ok(await harness.call("PUT", f"/client/live/room/{live_late_id}", "u5"))
    page = await listed(harness, "/client/live/room")
    assert ids(page) == [live_late_id, live_early, created_new, created_old]
    assert page["total_count"] == 4
    assert all(set(room) == ROOM_FIELDS for room in page["list"])
    same = await listed(harness, "/client/live/room", keyword="")
    assert ids(same) == ids(page)


@pytest.mark.both_backends
async def test_search_matches_title_id_anchor_and_nick_case_insensitively(
    harness: Harness,
) -> None:
    by_title = (await create_room(harness, "u1", title="Midnight JAZZ Session"))["live_id"]
    by_anchor = (await create_room(harness, "DJ_Kool", title="beats"))["live_id"]
    by_nick = (await create_room(harness, "u3", title="talk"))["live_id"]
    assert_ok(await harness.call("PUT", "/client/user/user", "u3", json={"nick": "Jazzman Joe"}))
    other = (await create_room(harness, "u4", title="news"))["live_id"]

    async def search(keyword: str) -> set[str]:
        return set(ids(await listed(harness, "/client/live/room", keyword=keyword)))

    assert await search("jazz") == {by_title, by_nick}
    assert await search("JAZZ SESSION") == {by_title}
    assert await search("dj_kOOL") == {by_anchor}
    assert await search("joe") == {by_nick}
    assert await search(other.upper()) == {other}
    assert await search(other[-6:]) == {other}
    assert await search("nothing-matches") == set()
    assert await search("%") == set()  # a literal substring, no wildcard


async def test_search_paging(harness: Harness) -> None:
    rooms = [
        (await create_room(harness, f"anchor{i}", title=f"show {i}"))["live_id"] for i in range(3)
    ]
    first = await listed(harness, "/client/live/room", keyword="show", page_size=2)
    second = await listed(harness, "/client/live/room", keyword="show", page_size=2, page_num=2)
    assert ids(first) + ids(second) == rooms[::-1]
    assert (first["page_total"], first["end_page"], second["end_page"]) == (2, False, True)


# --- the anchor's own rooms (PROTOCOL §8.6) --------------------------------------------------

ANCHOR_LIST = "/client/live/room/list/anchor"


@pytest.mark.both_backends
async def test_the_anchors_own_rooms_in_any_status_by_start_time_then_newest(
    harness: Harness, connect: Connect
) -> None:
    plain = (await create_room(harness, "anchor"))["live_id"]  # start_time 0
    later = (await create_room(harness, "anchor"))["live_id"]  # 0 too: newer created first
    scheduled = (await create_room(harness, "anchor", start_at=1_800_000_000))["live_id"]
    live = await live_room(harness, "anchor")  # live and ended started at the same second:
    ended = await live_room(harness, "anchor")  # the newer one comes first
    assert_ok(await harness.call("POST", f"/client/live/room/{ended}", "anchor"))
    gone = (await create_room(harness, "anchor"))["live_id"]
    assert_ok(await harness.call("DELETE", f"/client/live/room/instance/{gone}", "anchor"))
    await create_room(harness, "someone else")

    page = await listed(harness, ANCHOR_LIST, "anchor")
    assert set(page) == PAGE_FIELDS
    assert ids(page) == [scheduled, ended, live, later, plain]
    assert [room["live_status"] for room in page["list"]] == [0, 2, 1, 0, 0]
    assert all(set(room) == ROOM_FIELDS for room in page["list"])
    assert all(room["push_url"] for room in page["list"])  # the caller is their anchor
    assert (page["total_count"], page["page_total"], page["end_page"]) == (5, 1, True)

    second = await listed(harness, ANCHOR_LIST + "/", "anchor", page_num=2, page_size=2)
    assert ids(second) == [live, later]
    assert (second["total_count"], second["page_total"], second["end_page"]) == (5, 3, False)
    assert ids(await listed(harness, ANCHOR_LIST, "nobody")) == []

    client = await connect(harness, "anchor")
    over_socket = await client.request("room.anchor_list", page_size=2)
    assert [room["live_id"] for room in over_socket["list"]] == [scheduled, ended]
