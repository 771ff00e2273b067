"""The Store contract (livesignal/signal/store/base.py), checked on the embedded MemoryStore.

Written against the interface only, so that another implementation (Redis) can be added to the
`store` fixture's parameters and be held to the same rules.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from livesignal.signal.errors import BadRequest, NotFound, TooManyRequests, WrongState
from livesignal.signal.model import Relay, RelayStatus, Room, RoomStatus, User
from livesignal.signal.store.base import Store
from livesignal.signal.store.memory import MemoryStore

T0 = 1_000_000.0
HOLD = 15.0

STORES: dict[str, Callable[[], Store]] = {"memory": MemoryStore}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> Store:
    return STORES[request.param]()


async def add_room(
    store: Store, live_id: str, anchor: str, status: RoomStatus = RoomStatus.LIVE
) -> Room:
    room = Room(
        live_id=live_id,
        title=live_id,
        anchor_id=anchor,
        chat_id=await store.next_id("chat"),
        created_at=T0,
        status=status,
        started_at=T0 if status != RoomStatus.CREATED else None,
    )
    assert await store.insert_room(room)
    stored = await store.get_room(live_id)
    assert stored is not None
    return stored


def relay_between(relay_id: str, init_room: str, recv_room: str) -> Relay:
    return Relay(
        relay_id=relay_id,
        init_user_id=f"anchor_{init_room}",
        init_room_id=init_room,
        recv_room_id=recv_room,
        recv_user_id=f"anchor_{recv_room}",
        created_at=T0,
    )


# --- counters and users --------------------------------------------------------------------


async def test_next_id_counts_per_name(store: Store) -> None:
    assert [await store.next_id("a") for _ in range(3)] == [1, 2, 3]
    assert await store.next_id("b") == 1


async def test_users_are_created_once_with_a_stable_im_userid(store: Store) -> None:
    alice = await store.ensure_user("alice")
    assert (alice.user_id, alice.nick, alice.avatar, alice.extends) == ("alice", "alice", "", {})
    assert (await store.ensure_user("alice")).im_userid == alice.im_userid
    assert (await store.ensure_user("bob")).im_userid != alice.im_userid
    assert await store.get_user("carol") is None
    assert set(await store.get_users(["alice", "carol", "bob"])) == {"alice", "bob"}


async def test_update_user_applies_atomically_and_never_changes_records_handed_out(
    store: Store,
) -> None:
    def first(user: User) -> None:
        user.nick = "Alice"
        user.extends["a"] = "1"

    def second(user: User) -> None:
        user.avatar = "pic"
        user.extends["b"] = "2"

    def refused(user: User) -> None:
        user.nick = "half-done"
        raise BadRequest("no")

    before = await store.update_user("alice", first)
    after = await store.update_user("alice", second)
    assert (after.nick, after.avatar, after.extends) == ("Alice", "pic", {"a": "1", "b": "2"})
    assert (before.avatar, before.extends) == ("", {"a": "1"})
    with pytest.raises(BadRequest):
        await store.update_user("alice", refused)
    assert (await store.ensure_user("alice")).nick == "Alice"


async def test_insert_room_counts_the_anchors_rooms_that_are_not_ended(store: Store) -> None:
    for index in range(2):
        room = Room(live_id=f"r{index}", title="x", anchor_id="alice", chat_id=index, created_at=T0)
        assert await store.insert_room(room, max_open_per_anchor=2)
    third = Room(live_id="r2", title="x", anchor_id="alice", chat_id=2, created_at=T0)
    with pytest.raises(TooManyRequests):
        await store.insert_room(third, max_open_per_anchor=2)
    assert await store.get_room("r2") is None
    other = Room(live_id="b0", title="x", anchor_id="bob", chat_id=3, created_at=T0)
    assert await store.insert_room(other, max_open_per_anchor=2)  # counted per anchor

    def end(room: Room | None) -> None:
        assert room is not None
        room.status = RoomStatus.ENDED

    await store.update_room("r0", end)  # an ended room no longer counts ...
    assert await store.insert_room(third, max_open_per_anchor=2)
    await store.delete_room("r1")  # ... nor a deleted one
    fourth = Room(live_id="r3", title="x", anchor_id="alice", chat_id=4, created_at=T0)
    assert await store.insert_room(fourth, max_open_per_anchor=2)


# --- rooms ---------------------------------------------------------------------------------


async def test_insert_room_refuses_a_taken_id(store: Store) -> None:
    await add_room(store, "r1", "alice")
    clash = Room(live_id="r1", title="x", anchor_id="bob", chat_id=9, created_at=T0)
    assert not await store.insert_room(clash)
    room = await store.get_room("r1")
    assert room is not None and room.anchor_id == "alice"


async def test_update_room_is_all_or_nothing(store: Store) -> None:
    await add_room(store, "r1", "alice")
    handed_out = await store.get_room("r1")
    assert handed_out is not None

    def failing(room: Room | None) -> None:
        assert room is not None
        room.title = "changed"
        raise WrongState("no")

    with pytest.raises(WrongState):
        await store.update_room("r1", failing)
    unchanged = await store.get_room("r1")
    assert unchanged is not None and unchanged.title == "r1"

    def rename(room: Room | None) -> str:
        assert room is not None
        room.title = "renamed"
        room.extends["k"] = "v"
        return "done"

    assert await store.update_room("r1", rename) == "done"
    renamed = await store.get_room("r1")
    assert renamed is not None and (renamed.title, renamed.extends) == ("renamed", {"k": "v"})
    assert (handed_out.title, handed_out.extends) == ("r1", {}), "copy-on-write"


async def test_update_room_of_a_missing_room_sees_none(store: Store) -> None:
    def check(room: Room | None) -> bool:
        return room is None

    assert await store.update_room("nope", check) is True
    assert await store.get_room("nope") is None


async def test_rooms_with_status(store: Store) -> None:
    await add_room(store, "c", "a1", RoomStatus.CREATED)
    await add_room(store, "l", "a2", RoomStatus.LIVE)
    await add_room(store, "e", "a3", RoomStatus.ENDED)
    live = await store.rooms_with_status([RoomStatus.LIVE])
    assert [r.live_id for r in live] == ["l"]
    both = await store.rooms_with_status([RoomStatus.CREATED, RoomStatus.LIVE])
    assert sorted(r.live_id for r in both) == ["c", "l"]


async def test_rooms_with_status_follows_changes_and_deletion(store: Store) -> None:
    await add_room(store, "c", "a1", RoomStatus.CREATED)

    def go_live(room: Room | None) -> None:
        assert room is not None
        room.status = RoomStatus.LIVE

    await store.update_room("c", go_live)
    assert [r.live_id for r in await store.rooms_with_status([RoomStatus.CREATED])] == []
    live = await store.rooms_with_status([RoomStatus.LIVE])
    assert [(r.live_id, r.status) for r in live] == [("c", RoomStatus.LIVE)]
    await store.delete_room("c")
    assert await store.rooms_with_status(list(RoomStatus)) == []


# --- presence ------------------------------------------------------------------------------


async def test_join_counts_pv_and_uv(store: Store) -> None:
    await add_room(store, "r1", "anchor")
    first = await store.join("bob", "r1", T0, T0 + HOLD, False)
    assert first.newly_present and (first.room.pv, first.room.uv) == (1, 1)
    again = await store.join("bob", "r1", T0 + 1, T0 + 1 + HOLD, False)
    assert not again.newly_present and (again.room.pv, again.room.uv) == (1, 1)
    lapsed = await store.join("bob", "r1", T0 + 1 + HOLD, T0 + 1 + 2 * HOLD, False)
    assert lapsed.newly_present and (lapsed.room.pv, lapsed.room.uv) == (2, 1)
    assert await store.present_count("r1", T0 + 2 + HOLD) == 1


async def test_join_refuses_missing_and_ended_rooms(store: Store) -> None:
    await add_room(store, "ended", "anchor", RoomStatus.ENDED)
    with pytest.raises(NotFound):
        await store.join("bob", "nope", T0, T0 + HOLD, False)
    with pytest.raises(WrongState):
        await store.join("bob", "ended", T0, T0 + HOLD, False)
    assert await store.current_room("bob") is None


async def test_join_switches_rooms(store: Store) -> None:
    await add_room(store, "a", "anchor_a")
    await add_room(store, "b", "anchor_b")
    await store.join("bob", "a", T0, T0 + HOLD, False)
    switched = await store.join("bob", "b", T0 + 1, T0 + 1 + HOLD, False)
    assert switched.left is not None and switched.left.live_id == "a"
    assert switched.left_room is not None and switched.left_room.live_id == "a"
    assert await store.current_room("bob") == "b"
    assert await store.get_member("bob", "a") is None
    assert await store.present_count("a", T0 + 1) == 0


async def test_anchor_presence_and_absence(store: Store) -> None:
    await add_room(store, "a", "anchor")
    await add_room(store, "b", "other")
    came = await store.join("anchor", "a", T0, T0 + HOLD, False)
    assert came.anchor_came_online and came.room.anchor_absent_since is None
    switched = await store.join("anchor", "b", T0 + 5, T0 + 5 + HOLD, False)
    assert switched.left_room is not None
    assert switched.left_room.anchor_absent_since == T0 + 5
    back = await store.join("anchor", "a", T0 + 6, T0 + 6 + HOLD, False)
    assert back.anchor_came_online and back.room.anchor_absent_since is None


async def test_heartbeat_extends_only_present_members(store: Store) -> None:
    await add_room(store, "r1", "anchor")
    assert await store.heartbeat("bob", "r1", T0, T0 + HOLD) is None
    await store.join("bob", "r1", T0, T0 + HOLD, False)
    member = await store.heartbeat("bob", "r1", T0 + 10, T0 + 10 + HOLD)
    assert member is not None and member.rest_deadline == T0 + 10 + HOLD
    assert await store.expire_members(T0 + HOLD) == []
    assert await store.present_count("r1", T0 + HOLD + 5) == 1
    # Lapsed but not yet swept: no longer a member as far as heartbeat and leave go.
    assert await store.heartbeat("bob", "r1", T0 + 10 + HOLD, T0 + 20 + HOLD) is None
    assert await store.leave("bob", "r1", T0 + 10 + HOLD) is None


async def test_leave(store: Store) -> None:
    await add_room(store, "r1", "anchor")
    await store.join("anchor", "r1", T0, T0 + HOLD, False)
    await store.join("bob", "r1", T0, T0 + HOLD, False)
    assert await store.leave("carol", "r1", T0) is None
    bob_left = await store.leave("bob", "r1", T0 + 1)
    assert bob_left is not None and not bob_left.anchor_went_offline
    anchor_left = await store.leave("anchor", "r1", T0 + 2)
    assert anchor_left is not None and anchor_left.anchor_went_offline
    assert anchor_left.room is not None and anchor_left.room.anchor_absent_since == T0 + 2
    assert await store.leave("bob", "r1", T0 + 3) is None
    assert await store.current_room("bob") is None


async def test_expire_members_at_their_deadline(store: Store) -> None:
    await add_room(store, "r1", "anchor")
    await store.join("anchor", "r1", T0, T0 + HOLD, False)
    await store.join("bob", "r1", T0 + 5, T0 + 5 + HOLD, False)
    await store.join("carol", "r1", T0, T0 + HOLD, False)
    await store.heartbeat("carol", "r1", T0 + 10, T0 + 10 + HOLD)
    assert await store.expire_members(T0 + HOLD - 0.1) == []
    gone = await store.expire_members(T0 + HOLD)
    assert [d.member.user_id for d in gone] == ["anchor"]
    assert gone[0].anchor_went_offline
    # Absence counts from the lapse, however late the expiry runs.
    assert gone[0].room is not None and gone[0].room.anchor_absent_since == T0 + HOLD
    later = await store.expire_members(T0 + 100)
    assert sorted(d.member.user_id for d in later) == ["bob", "carol"]
    assert await store.expire_members(T0 + 200) == []
    assert await store.present_members("r1", T0 + 200) == []


async def test_socket_holds(store: Store) -> None:
    await add_room(store, "r1", "anchor")
    await store.join("bob", "r1", T0, None, True)
    await store.join("bob", "r1", T0, None, True)
    assert await store.expire_members(T0 + 1000) == [], "socket-held members never lapse"
    assert await store.release_socket("bob", "r1", T0 + 1000) is None  # one socket left
    departure = await store.release_socket("bob", "r1", T0 + 1000)
    assert departure is not None and departure.member.user_id == "bob"
    assert await store.current_room("bob") is None
    assert await store.release_socket("bob", "r1", T0 + 1000) is None


async def test_socket_release_keeps_a_rest_held_member(store: Store) -> None:
    await add_room(store, "r1", "anchor")
    await store.join("bob", "r1", T0, None, True)
    await store.join("bob", "r1", T0, T0 + HOLD, False)
    assert await store.release_socket("bob", "r1", T0 + 1) is None
    assert await store.present_count("r1", T0 + 1) == 1
    gone = await store.expire_members(T0 + HOLD)
    assert [d.member.user_id for d in gone] == ["bob"]


async def test_present_members_in_join_order(store: Store) -> None:
    await add_room(store, "r1", "anchor")
    for i, user in enumerate(["u3", "u1", "u2"]):
        await store.join(user, "r1", T0 + i, T0 + i + HOLD, False)
    present = await store.present_members("r1", T0 + 2)
    assert [m.user_id for m in present] == ["u3", "u1", "u2"]
    assert [m.user_id for m in await store.present_members("r1", T0 + HOLD + 0.5)] == ["u1", "u2"]


async def test_delete_room_drops_its_memberships(store: Store) -> None:
    await add_room(store, "r1", "anchor")
    await store.join("bob", "r1", T0, T0 + HOLD, False)
    members = await store.delete_room("r1")
    assert [m.user_id for m in members] == ["bob"]
    assert await store.get_room("r1") is None
    assert await store.current_room("bob") is None
    assert await store.heartbeat("bob", "r1", T0, T0 + HOLD) is None
    assert await store.expire_members(T0 + 100) == []


# --- relays --------------------------------------------------------------------------------


async def test_insert_relay_marks_both_rooms_busy(store: Store) -> None:
    for live_id in ("a", "b", "c"):
        await add_room(store, live_id, f"anchor_{live_id}")
    await store.insert_relay(relay_between("r1", "a", "b"))
    for live_id in ("a", "b"):
        room = await store.get_room(live_id)
        assert room is not None and room.relay_id == "r1"
    with pytest.raises(WrongState):
        await store.insert_relay(relay_between("r2", "c", "b"))
    with pytest.raises(WrongState):
        await store.insert_relay(relay_between("r3", "a", "c"))
    assert await store.get_relay("r2") is None
    c = await store.get_room("c")
    assert c is not None and c.relay_id == ""
    assert [r.relay_id for r in await store.active_relays()] == ["r1"]


async def test_insert_relay_needs_live_rooms(store: Store) -> None:
    await add_room(store, "live", "anchor_live")
    await add_room(store, "created", "anchor_created", RoomStatus.CREATED)
    with pytest.raises(WrongState):
        await store.insert_relay(relay_between("r1", "live", "created"))
    with pytest.raises(NotFound):
        await store.insert_relay(relay_between("r2", "live", "nope"))
    live = await store.get_room("live")
    assert live is not None and live.relay_id == ""


@pytest.mark.parametrize("final", [RelayStatus.REJECTED, RelayStatus.ENDED])
async def test_a_final_relay_frees_its_rooms(store: Store, final: RelayStatus) -> None:
    await add_room(store, "a", "anchor_a")
    await add_room(store, "b", "anchor_b")
    await store.insert_relay(relay_between("r1", "a", "b"))

    def accept(relay: Relay | None) -> None:
        assert relay is not None
        relay.status = RelayStatus.ACCEPTED

    def finish(relay: Relay | None) -> None:
        assert relay is not None
        relay.status = final

    await store.update_relay("r1", accept)
    assert [r.status for r in await store.active_relays()] == [RelayStatus.ACCEPTED]
    await store.update_relay("r1", finish)
    assert await store.active_relays() == []
    for live_id in ("a", "b"):
        room = await store.get_room(live_id)
        assert room is not None and room.relay_id == ""
    relay = await store.get_relay("r1")
    assert relay is not None and relay.status == final
    await store.insert_relay(relay_between("r2", "b", "a"))
