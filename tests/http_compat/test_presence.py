"""PROTOCOL §3.2 membership and §3.3 presence over REST: join, leave, heartbeat, user_list,
pv/uv/online_count, expiry and the anchor timeout, all driven by the manual clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.conftest import Harness, HarnessFactory
from tests.rest_helpers import (
    USER_FIELDS,
    assert_error,
    assert_ok,
    create_room,
    info,
    join,
    live_room,
    user_ids_in,
)

# Presence, its expiry and its counters are the store's: every test here runs on both backends.
pytestmark = pytest.mark.both_backends

TIMEOUT = 5.0 * 3  # default heartbeat_interval * missed_heartbeats
CLOSE = 600.0  # default anchor_offline_close


async def heartbeat(h: Harness, user: str, live_id: str) -> dict[str, object]:
    data: dict[str, object] = assert_ok(
        await h.call("GET", f"/client/live/room/heartbeat/{live_id}", user)
    )
    return data


async def leave(h: Harness, user: str, live_id: str) -> None:
    assert assert_ok(await h.call("DELETE", f"/client/live/room/user/{live_id}", user)) == {}


# --- join ----------------------------------------------------------------------------------


async def test_join_returns_the_room_with_the_new_counts(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    room = await join(harness, "bob", live_id)
    assert room["live_id"] == live_id
    assert (room["online_count"], room["pv"], room["uv"]) == (2, 2, 2)
    assert room["push_url"] == ""
    assert sorted(await user_ids_in(harness, live_id)) == ["anchor", "bob"]


async def test_join_of_a_created_room_is_allowed(harness: Harness) -> None:
    live_id = (await create_room(harness, "anchor"))["live_id"]
    room = await join(harness, "bob", live_id)
    assert (room["live_status"], room["online_count"], room["anchor_status"]) == (0, 1, 0)


async def test_rejoining_while_present_changes_nothing(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    harness.advance(3)
    again = await join(harness, "bob", live_id)
    assert (again["online_count"], again["pv"], again["uv"]) == (2, 2, 2)


async def test_pv_counts_joins_that_made_a_user_present_uv_counts_users(
    harness: Harness,
) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    await leave(harness, "bob", live_id)
    after_leave = await info(harness, live_id)
    assert (after_leave["online_count"], after_leave["pv"], after_leave["uv"]) == (1, 2, 2)
    await join(harness, "bob", live_id)
    await join(harness, "carol", live_id)
    room = await info(harness, live_id)
    assert (room["online_count"], room["pv"], room["uv"]) == (3, 4, 3)
    # A lapsed member who comes back is present again: one more pv, same uv.
    harness.advance(TIMEOUT - 1)
    await heartbeat(harness, "anchor", live_id)
    await heartbeat(harness, "carol", live_id)
    harness.advance(2)
    await harness.sweep()
    assert (await info(harness, live_id))["online_count"] == 2
    back = await join(harness, "bob", live_id)
    assert (back["online_count"], back["pv"], back["uv"]) == (3, 5, 3)


async def test_joining_another_room_leaves_the_first(harness: Harness) -> None:
    room_a = await live_room(harness, "anchor_a")
    room_b = await live_room(harness, "anchor_b")
    await join(harness, "bob", room_a)
    in_b = await join(harness, "bob", room_b)
    assert in_b["online_count"] == 2
    a = await info(harness, room_a)
    assert (a["online_count"], a["pv"]) == (1, 2)
    assert await user_ids_in(harness, room_a) == ["anchor_a"]
    assert sorted(await user_ids_in(harness, room_b)) == ["anchor_b", "bob"]
    # Bob is no longer a member of A: no heartbeat, no leave there.
    assert_error(await harness.call("GET", f"/client/live/room/heartbeat/{room_a}", "bob"), 404)
    assert_error(await harness.call("DELETE", f"/client/live/room/user/{room_a}", "bob"), 404)
    # Coming back to A is a new presence there.
    back = await join(harness, "bob", room_a)
    assert (back["online_count"], back["pv"], back["uv"]) == (2, 3, 2)
    assert (await info(harness, room_b))["online_count"] == 1


async def test_anchor_joining_another_room_goes_offline_in_its_own(harness: Harness) -> None:
    own = await live_room(harness, "anchor")
    other = await live_room(harness, "other")
    await join(harness, "anchor", other)
    room = await info(harness, own)
    assert (room["anchor_status"], room["online_count"], room["live_status"]) == (0, 0, 1)
    harness.advance(CLOSE)
    await harness.sweep()
    ended = await info(harness, own)
    assert ended["live_status"] == 2
    assert ended["end_time"] == int(harness.clock.now())


# --- leave ---------------------------------------------------------------------------------


async def test_leave(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    await leave(harness, "bob", live_id)
    assert (await info(harness, live_id))["online_count"] == 1
    assert await user_ids_in(harness, live_id) == ["anchor"]
    assert_error(await harness.call("DELETE", f"/client/live/room/user/{live_id}", "bob"), 404)


async def test_leave_of_a_non_member_or_unknown_room_is_404(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    assert_error(await harness.call("DELETE", f"/client/live/room/user/{live_id}", "bob"), 404)
    assert_error(await harness.call("DELETE", "/client/live/room/user/live_nope", "bob"), 404)


async def test_anchor_leaving_goes_offline_and_the_room_ends_after_the_grace(
    harness: Harness,
) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    await leave(harness, "anchor", live_id)
    left_at = int(harness.clock.now())
    room = await info(harness, live_id)
    assert (room["anchor_status"], room["online_count"], room["live_status"]) == (0, 1, 1)
    harness.advance(CLOSE - 1)
    await harness.sweep()
    assert (await info(harness, live_id))["live_status"] == 1
    harness.advance(1)
    await harness.sweep()
    ended = await info(harness, live_id)
    assert (ended["live_status"], ended["end_time"]) == (2, left_at + int(CLOSE))


# --- heartbeat -----------------------------------------------------------------------------


async def test_heartbeat_returns_live_id_and_status(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    assert await heartbeat(harness, "bob", live_id) == {"live_id": live_id, "live_status": 1}


async def test_heartbeat_of_a_non_member_is_404(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    assert_error(await harness.call("GET", f"/client/live/room/heartbeat/{live_id}", "bob"), 404)
    assert_error(await harness.call("GET", "/client/live/room/heartbeat/live_nope", "bob"), 404)
    assert "bob" not in await user_ids_in(harness, live_id), "a heartbeat is not a join"


async def test_heartbeats_keep_a_member_present(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    for _ in range(6):
        harness.advance(5)
        await heartbeat(harness, "bob", live_id)
        await heartbeat(harness, "anchor", live_id)
        await harness.sweep()
    room = await info(harness, live_id)
    assert (room["online_count"], room["pv"], room["anchor_status"]) == (2, 2, 1)


async def test_member_is_gone_after_interval_times_missed(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    harness.advance(5)
    await join(harness, "bob", live_id)
    harness.advance(TIMEOUT - 0.5)
    await harness.sweep()
    assert sorted(await user_ids_in(harness, live_id)) == ["bob"]  # the anchor lapsed first
    harness.advance(0.5)
    await harness.sweep()
    room = await info(harness, live_id)
    assert (room["online_count"], room["anchor_status"]) == (0, 0)
    assert await user_ids_in(harness, live_id) == []
    assert_error(await harness.call("GET", f"/client/live/room/heartbeat/{live_id}", "bob"), 404)
    assert_error(await harness.call("DELETE", f"/client/live/room/user/{live_id}", "bob"), 404)


async def test_a_lapsed_member_is_gone_even_before_the_sweep_runs(harness: Harness) -> None:
    """Presence is a function of time; the sweep only announces it."""
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    harness.advance(TIMEOUT)
    room = await info(harness, live_id)
    assert (room["online_count"], room["anchor_status"]) == (0, 0)
    assert await user_ids_in(harness, live_id) == []
    assert_error(await harness.call("GET", f"/client/live/room/heartbeat/{live_id}", "bob"), 404)
    # Joining again is a new presence.
    assert (await join(harness, "bob", live_id))["pv"] == 3


async def test_presence_timeout_follows_the_settings(make_harness: HarnessFactory) -> None:
    h = await make_harness({"presence": {"heartbeat_interval": 2.0, "missed_heartbeats": 2}})
    live_id = await live_room(h, "anchor")
    await join(h, "bob", live_id)
    h.advance(3.9)
    await h.sweep()
    assert (await info(h, live_id))["online_count"] == 2
    h.advance(0.1)
    await h.sweep()
    assert (await info(h, live_id))["online_count"] == 0


async def test_anchor_heartbeat_rejoins_after_a_lapse(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    harness.advance(TIMEOUT)
    await harness.sweep()
    assert (await info(harness, live_id))["anchor_status"] == 0
    assert await heartbeat(harness, "anchor", live_id) == {"live_id": live_id, "live_status": 1}
    room = await info(harness, live_id)
    assert (room["anchor_status"], room["online_count"], room["pv"], room["uv"]) == (1, 1, 2, 1)
    # The absence clock was reset: a full grace after the first lapse, the room is still live.
    harness.advance(CLOSE - TIMEOUT)
    await heartbeat(harness, "anchor", live_id)
    await harness.sweep()
    assert (await info(harness, live_id))["live_status"] == 1


async def test_anchor_heartbeat_joins_a_created_room(harness: Harness) -> None:
    live_id = (await create_room(harness, "anchor"))["live_id"]
    assert await heartbeat(harness, "anchor", live_id) == {"live_id": live_id, "live_status": 0}
    room = await info(harness, live_id)
    assert (room["anchor_status"], room["online_count"]) == (1, 1)


async def test_anchor_timeout_ends_the_room(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    started = int(harness.clock.now())
    harness.advance(TIMEOUT)
    await harness.sweep()
    assert (await info(harness, live_id))["live_status"] == 1
    harness.advance(CLOSE - 1)
    await harness.sweep()
    assert (await info(harness, live_id))["live_status"] == 1
    harness.advance(1)
    await harness.sweep()
    room = await info(harness, live_id)
    assert room["live_status"] == 2
    # Counted from the moment presence lapsed, not from when the sweep noticed.
    assert room["end_time"] == started + int(TIMEOUT + CLOSE)
    assert room["start_time"] == started
    assert (await harness.call("GET", "/client/live/room/list", "x")).data["total_count"] == 0


async def test_anchor_timeout_in_one_late_sweep_still_ends_at_the_right_time(
    harness: Harness,
) -> None:
    live_id = await live_room(harness, "anchor")
    started = int(harness.clock.now())
    harness.advance(TIMEOUT + CLOSE + 500)
    await harness.sweep()
    room = await info(harness, live_id)
    assert (room["live_status"], room["end_time"]) == (2, started + int(TIMEOUT + CLOSE))


async def test_anchor_offline_close_follows_the_settings(make_harness: HarnessFactory) -> None:
    h = await make_harness({"presence": {"anchor_offline_close": 30.0}})
    live_id = await live_room(h, "anchor")
    h.advance(TIMEOUT + 29)
    await h.sweep()
    assert (await info(h, live_id))["live_status"] == 1
    h.advance(1)
    await h.sweep()
    assert (await info(h, live_id))["live_status"] == 2


async def test_room_started_by_an_admin_ends_if_its_anchor_never_comes(
    harness: Harness,
) -> None:
    live_id = (await create_room(harness, "anchor"))["live_id"]
    admin = harness.token("moderator", role="admin")
    assert_ok(await harness.call("PUT", f"/client/live/room/{live_id}", token=admin))
    harness.advance(CLOSE)
    await harness.sweep()
    assert (await info(harness, live_id))["live_status"] == 2


async def test_members_of_an_ended_room_stay_until_they_leave_or_lapse(
    harness: Harness,
) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    assert_ok(await harness.call("POST", f"/client/live/room/{live_id}", "anchor"))
    assert sorted(await user_ids_in(harness, live_id)) == ["anchor", "bob"]
    assert await heartbeat(harness, "bob", live_id) == {"live_id": live_id, "live_status": 2}
    assert await heartbeat(harness, "anchor", live_id) == {"live_id": live_id, "live_status": 2}
    harness.advance(TIMEOUT)
    await harness.sweep()
    assert await user_ids_in(harness, live_id) == []
    assert_error(await harness.call("GET", f"/client/live/room/heartbeat/{live_id}", "bob"), 404)


async def test_members_of_a_deleted_room_are_gone(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    assert_ok(await harness.call("DELETE", f"/client/live/room/instance/{live_id}", "anchor"))
    assert_error(await harness.call("GET", f"/client/live/room/heartbeat/{live_id}", "bob"), 404)
    assert_error(await harness.call("DELETE", f"/client/live/room/user/{live_id}", "bob"), 404)
    # Bob is in no room any more: he can join another one normally.
    other = await live_room(harness, "other")
    assert (await join(harness, "bob", other))["online_count"] == 2


# --- user_list -----------------------------------------------------------------------------


async def test_user_list_shows_present_members_as_user_objects(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    assert_ok(await harness.call("PUT", "/client/user/user", "bob", json={"nick": "Bobby"}))
    await join(harness, "bob", live_id)
    page = assert_ok(
        await harness.call("GET", "/client/live/room/user_list", "x", params={"live_id": live_id})
    )
    assert (page["total_count"], page["page_total"], page["end_page"]) == (2, 1, True)
    users = {user["user_id"]: user for user in page["list"]}
    assert set(users) == {"anchor", "bob"}
    assert all(set(user) == USER_FIELDS for user in users.values())
    assert users["bob"]["nick"] == "Bobby"


async def test_user_list_paging(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    for i in range(6):
        await join(harness, f"viewer{i}", live_id)
    seen: list[str] = []
    for page_num, expected_len, end_page in ((1, 3, False), (2, 3, False), (3, 1, True)):
        page = assert_ok(
            await harness.call(
                "GET",
                "/client/live/room/user_list",
                "x",
                params={"live_id": live_id, "page_num": str(page_num), "page_size": "3"},
            )
        )
        assert (len(page["list"]), page["end_page"]) == (expected_len, end_page)
        assert (page["total_count"], page["page_total"]) == (7, 3)
        seen += [user["user_id"] for user in page["list"]]
    assert sorted(seen) == sorted(["anchor"] + [f"viewer{i}" for i in range(6)])


# --- concurrency ---------------------------------------------------------------------------


async def test_concurrent_joins_by_one_user_leave_it_in_exactly_one_room(
    harness: Harness,
) -> None:
    rooms = [await live_room(harness, f"anchor{i}") for i in range(10)]
    # 60 joins at once, 6 per room: on Redis every one conflicts with all the others.
    targets = [rooms[i % 10] for i in range(60)]
    random.Random(7).shuffle(targets)
    token = harness.token("roamer")
    replies = await asyncio.gather(
        *(harness.call("POST", f"/client/live/room/user/{room}", token=token) for room in targets)
    )
    assert all(reply.status == 200 and reply.code == 0 for reply in replies)
    rooms_with_roamer = []
    viewers = 0
    for i, live_id in enumerate(rooms):
        room = await info(harness, live_id)
        viewers += room["online_count"] - 1
        members = await user_ids_in(harness, live_id)
        assert len(members) == room["online_count"], (live_id, members, room)
        assert f"anchor{i}" in members and room["anchor_status"] == 1
        if "roamer" in members:
            rooms_with_roamer.append(live_id)
        sent_here = targets.count(live_id)
        # The first join processed for each room made the roamer present there; no join
        # counted twice. uv: the roamer visited every room.
        assert 1 <= room["pv"] - 1 <= sent_here, (room["pv"], sent_here)
        assert room["uv"] == 2
    assert len(rooms_with_roamer) == 1
    assert viewers == 1
    # Only the room the roamer is in accepts its heartbeat.
    for live_id in rooms:
        reply = await harness.call("GET", f"/client/live/room/heartbeat/{live_id}", token=token)
        assert reply.status == (200 if live_id in rooms_with_roamer else 404)


async def test_concurrent_joins_by_many_users_are_all_counted(harness: Harness) -> None:
    live_id = await live_room(harness, "anchor")
    replies = await asyncio.gather(
        *(harness.call("POST", f"/client/live/room/user/{live_id}", f"u{i}") for i in range(50))
    )
    assert all(reply.code == 0 for reply in replies)
    room = await info(harness, live_id)
    assert (room["online_count"], room["pv"], room["uv"]) == (51, 51, 51)
    assert len(await user_ids_in(harness, live_id)) == 51


@pytest.mark.parametrize("leave_first", [False, True])
async def test_concurrent_join_and_leave_never_double_count(
    harness: Harness, leave_first: bool
) -> None:
    live_id = await live_room(harness, "anchor")
    await join(harness, "bob", live_id)
    calls = [
        harness.call("DELETE", f"/client/live/room/user/{live_id}", "bob"),
        harness.call("POST", f"/client/live/room/user/{live_id}", "bob"),
    ]
    if not leave_first:
        calls.reverse()
    await asyncio.gather(*calls)
    room = await info(harness, live_id)
    members = await user_ids_in(harness, live_id)
    assert room["online_count"] == len(members) in (1, 2)
    # Leave then join: bob is back (a new presence). Join (no-op) then leave: bob is gone.
    assert room["pv"] == 2 + ("bob" in members)
