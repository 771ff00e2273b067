"""A room's events over real sockets: coalesced writes keep every frame in order, and every
member of both rooms of a PK receives pk.state in seq order. (The timing rules of coalescing
are unit-tested on a manual clock in test_fanout.py and test_socket_timing.py.)"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Connect, Harness, HarnessFactory, live_room


@pytest.mark.both_backends
async def test_coalesced_writes_keep_every_frame_in_order(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    """[ws] flush_interval: frames wait to go out together, never reordered or lost."""
    harness = await make_harness({"ws": {"flush_interval": 0.01}})
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    viewer = await connect(harness, "viewer")
    joined = await viewer.request("room.join", live_id=live_id)
    sends = [anchor.request("chat.send", live_id=live_id, text=f"m{index}") for index in range(50)]
    await asyncio.gather(*sends)
    received = [await viewer.next_event("chat.message") for _ in range(50)]
    assert sorted(e["data"]["text"] for e in received) == sorted(f"m{i}" for i in range(50))
    seqs = [e["seq"] for e in received]
    assert seqs == list(range(joined["seq"] + 1, joined["seq"] + 51))
    # A reply after those events still comes after them, and the socket lives on.
    assert (await viewer.request("room.info", live_id=live_id))["live_id"] == live_id


@pytest.mark.both_backends
async def test_pk_state_reaches_every_member_of_both_rooms_in_seq_order(
    harness: Harness, connect: Connect
) -> None:
    alice, bob = await connect(harness, "alice"), await connect(harness, "bob")
    room_a, room_b = await live_room(alice), await live_room(bob)
    viewers = {}
    for index in range(6):
        room = room_a if index % 2 == 0 else room_b
        viewer = await connect(harness, f"viewer{index}")
        joined = await viewer.request("room.join", live_id=room)
        viewers[viewer] = (room, joined["seq"])
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    relay_id = started["relay_id"]
    await bob.request("relay.accept", relay_id=relay_id)
    await alice.request("relay.extends", relay_id=relay_id, extends={"score": "1:0"})
    await bob.request("relay.started", relay_id=relay_id)
    await alice.request("relay.started", relay_id=relay_id)
    await bob.request("relay.stop", relay_id=relay_id)
    await alice.request("chat.send", live_id=room_a, text="done")  # a marker after the PK
    await bob.request("chat.send", live_id=room_b, text="done")
    for viewer, (room, seq) in viewers.items():
        received = []
        while True:
            event = await viewer.next_event()
            assert event["live_id"] == room
            assert event["seq"] == seq + 1, "room events arrive in seq order without gaps"
            seq = event["seq"]
            if event["event"] == "chat.message":
                break
            received.append(event)
        states = [e["data"]["relay"] for e in received if e["event"] == "pk.state"]
        assert [s["status"] for s in states] == [1, 1, 3, 4, 6]
        assert states[1]["extends"] == {"score": "1:0"}
