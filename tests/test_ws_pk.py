"""A cross-room PK driven over WebSockets, and the same PK driven over REST."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from livesignal.client import SignalClient
from tests.conftest import Harness

Connect = Callable[..., Awaitable[SignalClient]]


async def live_room(client: SignalClient) -> str:
    room = await client.request("room.create", title="pk room")
    started = await client.request("room.start", live_id=room["live_id"])
    assert started["live_status"] == 1
    return str(room["live_id"])


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
