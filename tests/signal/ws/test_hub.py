"""The node's hub: what reaches every socket of a user (relay invitations and answers, over
WebSockets or from REST), and what the hub does to a user's sockets as a whole."""

from __future__ import annotations

from typing import Any

import pytest

from livesignal.client import SignalClient
from tests.conftest import Connect, Harness, live_room

# User-directed events travel through the broker (Redis pub/sub): both backends.
pytestmark = pytest.mark.both_backends


async def pk_states(client: SignalClient, count: int) -> list[dict[str, Any]]:
    return [(await client.next_event("pk.state"))["data"]["relay"] for _ in range(count)]


async def test_full_pk_over_websockets(harness: Harness, connect: Connect) -> None:
    alice = await connect(harness, "alice")
    bob = await connect(harness, "bob")
    room_a = await live_room(alice)
    room_b = await live_room(bob)
    viewer_a = await connect(harness, "va")
    viewer_b = await connect(harness, "vb")
    await viewer_a.request("room.join", live_id=room_a)
    await viewer_b.request("room.join", live_id=room_b)

    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    assert started["relay_status"] == 0 and started["relay_token"] == ""
    relay_id = started["relay_id"]
    invited = await bob.next_event("relay.invited")
    assert invited["data"]["relay"]["sid"] == relay_id
    assert "live_id" not in invited and "seq" not in invited

    accepted = await bob.request("relay.accept", relay_id=relay_id)
    assert accepted["relay_status"] == 1 and accepted["relay_token"]
    for anchor in (alice, bob):
        event = await anchor.next_event("relay.accepted")
        assert event["data"]["relay"]["status"] == 1

    await alice.request("relay.started", relay_id=relay_id)
    await bob.request("relay.started", relay_id=relay_id)
    await bob.request("relay.started", relay_id=relay_id)  # repeated: no change, no event
    await alice.request("relay.stop", relay_id=relay_id)

    for viewer in (viewer_a, viewer_b, alice, bob):
        statuses = [relay["status"] for relay in await pk_states(viewer, 4)]
        assert statuses == [1, 2, 4, 6]
    info = await viewer_a.request("room.info", live_id=room_a)
    assert info["pk_id"] == ""


async def test_pk_over_rest_reaches_the_receivers_socket(
    harness: Harness, connect: Connect
) -> None:
    bob = await connect(harness, "bob")
    room_b = await live_room(bob)
    created = await harness.call("POST", "/client/live/room/instance", "alice", json={"title": "a"})
    room_a = created.data["live_id"]
    await harness.call("PUT", f"/client/live/room/{room_a}", "alice")

    started = await harness.call(
        "POST",
        "/client/relay/start",
        "alice",
        json={"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": "bob"},
    )
    assert started.code == 0 and started.data["relay_status"] == 0
    relay_id = started.data["relay_id"]
    invited = await bob.next_event("relay.invited")
    assert invited["data"]["relay"]["init_user_id"] == "alice"

    await bob.request("relay.accept", relay_id=relay_id)
    state = (await bob.next_event("pk.state"))["data"]["relay"]
    assert state["status"] == 1 and state["start_at"]
    token = await harness.call("GET", f"/client/relay/{relay_id}/token", "alice")
    assert token.data["relay_status"] == 1 and token.data["relay_token"].startswith("ak:")
    assert (await harness.call("POST", f"/client/relay/{relay_id}/started", "alice")).code == 0
    assert (await bob.next_event("pk.state"))["data"]["relay"]["status"] == 2
    stopped = await harness.call("POST", f"/client/relay/{relay_id}/stop", "alice")
    assert stopped.code == 0
    final = (await bob.next_event("pk.state"))["data"]["relay"]
    assert final["status"] == 6 and final["reason"] == "stopped" and final["stop_at"]


async def test_cancel_and_invitation_timeout(harness: Harness, connect: Connect) -> None:
    alice, bob = await connect(harness, "alice"), await connect(harness, "bob")
    room_a, room_b = await live_room(alice), await live_room(bob)
    first = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    await alice.request("relay.cancel", relay_id=first["relay_id"])
    canceled = await bob.next_event("relay.canceled")
    assert canceled["data"]["relay"]["reason"] == "canceled"

    second = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    pending = await bob.request("relay.pending")
    assert [r["sid"] for r in pending["list"]] == [second["relay_id"]]
    await harness.pass_time(harness.settings.relay.invite_timeout + 0.1)
    await harness.sweep()
    for anchor in (alice, bob):
        timed_out = await anchor.next_event("relay.timeout")
        assert timed_out["data"]["relay"]["status"] == 6
        assert timed_out["data"]["relay"]["reason"] == "timeout"
    assert (await bob.request("relay.pending"))["list"] == []


async def test_stopping_a_live_room_ends_the_relay_for_both_rooms(
    harness: Harness, connect: Connect
) -> None:
    alice, bob = await connect(harness, "alice"), await connect(harness, "bob")
    room_a, room_b = await live_room(alice), await live_room(bob)
    viewer = await connect(harness, "viewer")
    await viewer.request("room.join", live_id=room_b)
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    await bob.request("relay.accept", relay_id=started["relay_id"])
    await alice.request("room.stop", live_id=room_a)
    for client in (viewer, bob, alice):
        assert [relay["status"] for relay in await pk_states(client, 2)] == [1, 6]
    relay = await viewer.request("relay.info", relay_id=started["relay_id"])
    assert relay["reason"] == "room_ended" and relay["stop_at"]
    info = await viewer.request("room.info", live_id=room_b)
    assert info["pk_id"] == ""
