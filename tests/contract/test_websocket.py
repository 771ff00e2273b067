"""PROTOCOL §4, black box: /ws frames, room and relay events, resume, through real sockets."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from livesignal.client import SignalClient, SignalError
from tests.conftest import Connect, Harness, HarnessFactory
from tests.conftest import live_room as ws_live_room
from tests.contract.helpers import (
    check_relay,
    check_room,
    check_user,
    count,
    names,
    quiet_events,
)
from tests.rest_helpers import (
    PAGE_FIELDS,
    assert_error,
    assert_ok,
    china_time,
    create_room,
    info,
    join,
    live_room,
)

# --- 4.1 frames -----------------------------------------------------------------------------------


async def test_welcome_frame_fields_and_types(make_harness: HarnessFactory) -> None:
    h = await make_harness({"presence": {"heartbeat_interval": 2.0, "missed_heartbeats": 4}})
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(h.ws_url, headers={"Authorization": h.token("zoe")}) as ws:
            welcome = await ws.receive_json(timeout=5)
    assert set(welcome) == {"type", "data"} and welcome["type"] == "welcome"
    data = welcome["data"]
    assert set(data) == {"session_id", "user_id", "heartbeat_interval", "heartbeat_timeout"}
    assert isinstance(data["session_id"], str) and data["session_id"]
    assert data["user_id"] == "zoe"
    assert data["heartbeat_interval"] == 2.0 and data["heartbeat_timeout"] == 8.0


async def test_ws_reply_shapes_for_every_list_op(harness: Harness, connect: Connect) -> None:
    h = harness
    alice = await connect(h, "alice")
    live_id = await ws_live_room(alice)
    async with aiohttp.ClientSession() as session:
        url = f"{h.ws_url}?token={h.token('bob')}"
        async with session.ws_connect(url) as ws:
            await ws.receive_json(timeout=5)
            frames: list[tuple[str, dict[str, Any], set[str]]] = [
                ("room.list", {}, PAGE_FIELDS),
                ("room.search", {"keyword": ""}, PAGE_FIELDS),
                ("room.user_list", {"live_id": live_id}, PAGE_FIELDS),
                ("relay.pending", {}, {"list"}),
                ("user.list", {"user_ids": "alice,bob"}, {"list"}),
                ("room.heartbeat", {"live_id": live_id}, set()),
            ]
            for index, (op, data, keys) in enumerate(frames):
                await ws.send_str(orjson.dumps({"id": index, "type": op, "data": data}).decode())
                reply = await ws.receive_json(timeout=5)
                assert set(reply) == {"id", "type", "code", "message", "data"}, reply
                assert (reply["id"], reply["type"]) == (index, "reply")
                if op == "room.heartbeat":
                    assert reply["code"] == 404 and reply["data"] is None
                    assert isinstance(reply["message"], str) and reply["message"]
                    continue
                assert (reply["code"], reply["message"]) == (0, "success")
                assert set(reply["data"]) == keys, (op, reply)
            frame = {"id": "s", "type": "room.join", "data": {"live_id": live_id}}
            await ws.send_str(orjson.dumps(frame).decode())
            joined = await ws.receive_json(timeout=5)
            assert joined["id"] == "s" and joined["code"] == 0
            check_room(joined["data"], ws_attach=True)
            assert joined["data"]["relay"] is None and joined["data"]["push_url"] == ""


async def test_app_level_ping_is_answered_with_a_pong_and_nothing_else(harness: Harness) -> None:
    """`{"type": "ping"}`, with or without an id, gets exactly `{"type": "pong"}` (no reply
    frame), and the socket goes on; the token here comes in the query, as browsers send it."""
    async with aiohttp.ClientSession() as session:
        url = f"{harness.ws_url}?token={harness.token('alice')}"
        async with session.ws_connect(url) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"
            await ws.send_str('{"type": "ping"}')
            await ws.send_str('{"type": "ping", "id": 3}')
            await ws.send_str('{"id": 1, "type": "user.profile"}')
            assert await ws.receive_json(timeout=5) == {"type": "pong"}
            assert await ws.receive_json(timeout=5) == {"type": "pong"}
            reply = await ws.receive_json(timeout=5)
            assert (reply["id"], reply["code"]) == (1, 0)


# --- 4.3 room events ------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_room_events_payloads_and_consecutive_seq(harness: Harness, connect: Connect) -> None:
    h = harness
    created = await create_room(h, "alice")
    live_id = created["live_id"]
    viewer = await connect(h, "vic")
    joined = await viewer.request("room.join", live_id=live_id)
    base = joined["seq"]
    assert_ok(await h.call("PUT", f"/client/live/room/{live_id}", "alice"))
    extends = {"live_id": live_id, "extends": {"k": "v"}}
    assert_ok(await h.call("PUT", "/client/live/room/extends", "alice", json=extends))
    await join(h, "bob", live_id)
    assert_ok(await h.call("DELETE", f"/client/live/room/user/{live_id}", "bob"))
    assert_ok(await h.call("DELETE", f"/client/live/room/user/{live_id}", "alice"))
    assert_ok(await h.call("POST", f"/client/live/room/{live_id}", "alice"))
    events = await quiet_events(viewer, count(9))
    assert names(events) == [
        "room.started",
        "member.joined",
        "anchor.online",
        "room.extends",
        "member.joined",
        "member.left",
        "member.left",
        "anchor.offline",
        "room.stopped",
    ]
    assert [e["seq"] for e in events] == list(range(base + 1, base + 1 + len(events)))
    for event in events:
        assert set(event) == {"type", "event", "live_id", "seq", "data"}
        assert event["type"] == "event" and event["live_id"] == live_id
        assert isinstance(event["data"], dict)
    check_user(events[1]["data"]["user"])
    assert events[1]["data"]["user"]["user_id"] == "alice"
    assert events[3]["data"]["extends"]["k"] == "v"
    assert events[5]["data"] == {"user_id": "bob", "reason": "leave"}
    assert events[6]["data"] == {"user_id": "alice", "reason": "leave"}
    assert events[8]["data"] == {"reason": "anchor"}


@pytest.mark.both_backends
async def test_chat_message_payload(harness: Harness, connect: Connect) -> None:
    h = harness
    alice = await connect(h, "alice")
    live_id = await ws_live_room(alice)
    viewer = await connect(h, "vic")
    await viewer.request("room.join", live_id=live_id)
    await h.call("PUT", "/client/user/user", "alice", json={"nick": "Al"})
    await alice.request("chat.send", live_id=live_id, text="héllo")
    message = await viewer.next_event("chat.message")
    assert message["data"] == {
        "user_id": "alice",
        "nick": "Al",
        "text": "héllo",
        "ts": int(h.clock.now() * 1000),
    }


@pytest.mark.both_backends
async def test_switch_and_timeout_reasons(harness: Harness, connect: Connect) -> None:
    h = harness
    alice = await connect(h, "alice")
    room_a = await ws_live_room(alice)
    room_b = await live_room(h, "carol")
    await join(h, "bob", room_a)
    await join(h, "bob", room_b)
    await join(h, "dan", room_a)
    await h.pass_time(h.settings.presence.timeout + 1)
    await h.sweep()
    events = [
        e for e in await quiet_events(alice, count(2, "member.left")) if e["event"] == "member.left"
    ]
    assert [e["data"] for e in events] == [
        {"user_id": "bob", "reason": "switched"},
        {"user_id": "dan", "reason": "timeout"},
    ]


@pytest.mark.both_backends
async def test_switching_away_from_a_lapsed_membership_is_a_timeout(
    harness: Harness, connect: Connect
) -> None:
    room_a = await live_room(harness, "alice")
    room_b = await live_room(harness, "carol")
    watcher = await connect(harness, "watcher")
    await watcher.request("room.join", live_id=room_a)
    await join(harness, "bob", room_a)
    await harness.pass_time(harness.settings.presence.timeout + 5)  # lapsed, no sweep ran
    await join(harness, "bob", room_b)
    while True:
        left = await watcher.next_event("member.left")
        if left["data"]["user_id"] == "bob":
            break
    assert left["data"] == {"user_id": "bob", "reason": "timeout"}


@pytest.mark.both_backends
async def test_a_heartbeat_over_the_socket_does_not_set_the_rest_timestamp(
    harness: Harness, connect: Connect
) -> None:
    anchor = await connect(harness, "anchor")
    live_id = await ws_live_room(anchor)
    viewer = await connect(harness, "viewer")
    await viewer.request("room.join", live_id=live_id)
    beat = await viewer.request("room.heartbeat", live_id=live_id)
    assert beat == {"live_id": live_id, "live_status": 1}
    await viewer.close()
    # Nothing but the socket held the member: it leaves now, by "leave", not later by timeout.
    left = await anchor.next_event("member.left")
    assert left["data"] == {"user_id": "viewer", "reason": "leave"}


@pytest.mark.both_backends
async def test_room_deleted_and_then_no_member_left(harness: Harness, connect: Connect) -> None:
    h = harness
    live_id = await live_room(h, "alice")
    viewer = await connect(h, "vic")
    await viewer.request("room.join", live_id=live_id)
    other = await live_room(h, "carol")
    watcher = await connect(h, "wat")
    await watcher.request("room.join", live_id=other)
    assert_ok(await h.call("DELETE", f"/client/live/room/instance/{live_id}", "alice"))
    events = await quiet_events(viewer, count(2))
    assert names(events) == ["room.stopped", "room.deleted"]
    assert events[1]["data"] == {}
    await viewer.request("room.join", live_id=other)  # no switched departure from a gone room
    await viewer.close()
    seen = await quiet_events(watcher, count(2))
    assert [(e["event"], e["data"].get("reason")) for e in seen] == [
        ("member.joined", None),
        ("member.left", "leave"),
    ]
    assert_error(await h.call("GET", f"/client/live/room/info/{live_id}", "vic"), 404)
    assert_error(await h.call("POST", f"/client/live/room/user/{live_id}", "vic"), 404)


@pytest.mark.both_backends
async def test_an_admin_starting_a_room_over_the_socket_receives_its_events(
    harness: Harness, connect: Connect
) -> None:
    room = await create_room(harness, "alice")
    admin = await SignalClient.connect(harness.ws_url, harness.token("root", role="admin"))
    try:
        reply = await admin.request("room.start", live_id=room["live_id"])
        assert reply["live_status"] == 1 and "seq" in reply
        await join(harness, "bob", room["live_id"])
        joined = await admin.next_event("member.joined")
        assert joined["data"]["user"]["user_id"] == "bob"
        assert (await info(harness, room["live_id"]))["online_count"] == 1  # not a member
    finally:
        await admin.close()


# --- 4.3 relay events -----------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_relay_events_are_user_directed_and_private_until_status_1(
    harness: Harness, connect: Connect
) -> None:
    h = harness
    alice, bob = await connect(h, "alice"), await connect(h, "bob")
    room_a, room_b = await ws_live_room(alice), await ws_live_room(bob)
    viewer = await connect(h, "vic")
    await viewer.request("room.join", live_id=room_a)
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    relay_id = started["relay_id"]
    await alice.request("relay.extends", relay_id=relay_id, extends={"x": "1"})
    invited = await bob.next_event("relay.invited")
    assert set(invited) == {"type", "event", "data"}
    check_relay(invited["data"]["relay"])
    # the initiator is not invited; invitations and their extends stay private
    assert [e for e in await quiet_events(alice) if e["event"] != "member.joined"] == []
    assert names(await quiet_events(viewer)) == []
    await bob.request("relay.reject", relay_id=relay_id, reason="busy now")
    for anchor in (alice, bob):
        rejected = await anchor.next_event("relay.rejected")
        assert set(rejected) == {"type", "event", "data"}
        assert set(rejected["data"]) == {"relay", "message"}
        assert rejected["data"]["message"] == "busy now"
        assert rejected["data"]["relay"]["status"] == 5
        assert rejected["data"]["relay"]["reason"] == "rejected"
    assert names(await quiet_events(viewer)) == []


@pytest.mark.both_backends
async def test_pending_invitation_canceled_when_a_room_ends(
    harness: Harness, connect: Connect
) -> None:
    h = harness
    alice, bob = await connect(h, "alice"), await connect(h, "bob")
    room_a, room_b = await ws_live_room(alice), await ws_live_room(bob)
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    assert_ok(await h.call("POST", f"/client/live/room/{room_a}", "alice"))
    for anchor in (alice, bob):
        canceled = await anchor.next_event("relay.canceled")
        assert set(canceled["data"]) == {"relay"}
        relay = canceled["data"]["relay"]
        assert relay["sid"] == started["relay_id"]
        assert (relay["status"], relay["reason"]) == (6, "room_ended")
        assert relay["stop_at"] == china_time(h.clock.now())
    assert "pk.state" not in names(await quiet_events(bob))


@pytest.mark.both_backends
async def test_pk_state_to_both_rooms_once_established(harness: Harness, connect: Connect) -> None:
    h = harness
    alice, bob = await connect(h, "alice"), await connect(h, "bob")
    room_a, room_b = await ws_live_room(alice), await ws_live_room(bob)
    viewer_a, viewer_b = await connect(h, "va"), await connect(h, "vb")
    await viewer_a.request("room.join", live_id=room_a)
    await viewer_b.request("room.join", live_id=room_b)
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    relay_id = started["relay_id"]
    await bob.request("relay.accept", relay_id=relay_id)
    await bob.request("relay.extends", relay_id=relay_id, extends={"score": "1"})
    await bob.request("relay.extends", relay_id=relay_id, extends={"score": "1"})  # no change
    await alice.request("relay.started", relay_id=relay_id)
    await alice.request("relay.started", relay_id=relay_id)  # repeated: no change
    for viewer, live_id in ((viewer_a, room_a), (viewer_b, room_b)):
        events = [
            e for e in await quiet_events(viewer, count(3, "pk.state")) if e["event"] == "pk.state"
        ]
        relays = [e["data"]["relay"] for e in events]
        assert [(r["status"], r["extends"]) for r in relays] == [
            (1, {}),
            (1, {"score": "1"}),
            (2, {"score": "1"}),
        ]
        assert all(e["live_id"] == live_id and set(e["data"]) == {"relay"} for e in events)
    joined = await (await connect(h, "late")).request("room.join", live_id=room_b)
    assert joined["relay"]["sid"] == relay_id and joined["relay"]["status"] == 2


# --- 4.5 resume -----------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_resume_rules(harness: Harness, connect: Connect) -> None:
    h = harness
    alice = await connect(h, "alice")
    live_id = (await alice.request("room.create", title="r"))["live_id"]
    current = (await alice.request("room.start", live_id=live_id))["seq"]
    assert current == 3  # room.started, member.joined, anchor.online
    bob = await connect(h, "bob")
    with pytest.raises(SignalError) as too_high:
        await bob.request("room.resume", live_id=live_id, since=current + 5)
    assert too_high.value.code == 400
    with pytest.raises(SignalError) as unknown:
        await bob.request("room.resume", live_id="live_nope", since=0)
    assert unknown.value.code == 404
    resumed = await bob.request("room.resume", live_id=live_id, since=0)
    assert resumed == {"recovered": True, "seq": current + 1}
    replayed = await quiet_events(bob, count(current + 1))
    assert [e["seq"] for e in replayed] == list(range(1, current + 2))
    assert replayed[-1]["event"] == "member.joined"
    assert replayed[-1]["data"]["user"]["user_id"] == "bob"
    assert_ok(await h.call("POST", f"/client/live/room/{live_id}", "alice"))
    carol = await connect(h, "carol")
    with pytest.raises(SignalError) as ended:
        await carol.request("room.resume", live_id=live_id, since=0)
    assert ended.value.code == 601
