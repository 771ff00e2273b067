"""One client's WebSocket (livesignal/signal/ws/connection.py): frames in, replies and events
out, heartbeat, presence, resume, back-pressure and close codes."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from livesignal.client import SignalClient, SignalError
from tests.conftest import Connect, Harness, HarnessFactory, live_room
from tests.rawws import StalledClient


@pytest.mark.both_backends
async def test_welcome_then_pending_invitations(harness: Harness, connect: Connect) -> None:
    alice = await connect(harness, "alice")
    bob_first = await connect(harness, "bob")
    room_a, room_b = await live_room(alice), await live_room(bob_first)
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    bob_phone = await connect(harness, "bob")
    assert bob_phone.welcome["user_id"] == "bob"
    assert bob_phone.welcome["heartbeat_interval"] == harness.settings.presence.heartbeat_interval
    assert bob_phone.welcome["heartbeat_timeout"] == harness.settings.presence.timeout
    assert bob_phone.welcome["session_id"] != bob_first.welcome["session_id"]
    invited = await bob_phone.next_event("relay.invited")
    assert invited["data"]["relay"]["sid"] == started["relay_id"]


async def test_bad_token_is_refused_before_the_upgrade(harness: Harness) -> None:
    async with aiohttp.ClientSession() as session:
        for query in ("", "?token=garbage"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(harness.ws_url + query)
            assert refused.value.status == 401
        async with session.get(harness.ws_url, headers={"Authorization": "Bearer x.y.z"}) as bad:
            assert bad.status == 401
            assert (await bad.json())["code"] == 401
        expired = harness.token("alice", ttl=1)
        harness.advance(5)
        async with session.get(harness.ws_url, params={"token": expired}) as response:
            assert response.status == 401
            assert (await response.json())["code"] == 499


async def test_malformed_frames_get_400_and_the_socket_stays(harness: Harness) -> None:
    frames = [
        "not json",
        "[1, 2]",
        '{"id": 7, "type": 5}',
        '{"id": 8, "type": "nope"}',
        '{"id": 9, "type": "room.info", "data": "x"}',
        '{"id": 10, "type": "room.info"}',
        '{"id": true, "type": "room.info"}',
    ]
    async with aiohttp.ClientSession() as session:
        url = f"{harness.ws_url}?token={harness.token('alice')}"
        async with session.ws_connect(url) as ws:
            assert (await ws.receive_json())["type"] == "welcome"
            for frame in frames:
                await ws.send_str(frame)
            replies = [await ws.receive_json(timeout=5) for _ in frames]
            assert [(r["id"], r["code"]) for r in replies] == [
                (None, 400),
                (None, 400),
                (7, 400),
                (8, 400),
                (9, 400),
                (10, 400),
                (None, 400),
            ]
            assert all(r["type"] == "reply" and r["data"] is None for r in replies)
            await ws.send_str('{"id": "last", "type": "user.profile"}')
            profile = await ws.receive_json(timeout=5)
            assert (profile["id"], profile["code"]) == ("last", 0)


async def test_binary_frame_closes_1003(harness: Harness, connect: Connect) -> None:
    client = await connect(harness, "alice")
    await client.send_raw(b"\x00\x01")
    assert await client.wait_closed() == 1003


async def test_oversized_frame_closes_1009(harness: Harness, connect: Connect) -> None:
    client = await connect(harness, "alice")
    await client.send_raw("x" * (64 * 1024 + 1))
    assert await client.wait_closed() == 1009


async def test_a_frame_of_exactly_64_kib_is_served(harness: Harness, connect: Connect) -> None:
    client = await connect(harness, "alice")
    frame = {"id": 7, "type": "user.profile", "data": {}, "pad": ""}
    frame["pad"] = "x" * (64 * 1024 - len(orjson.dumps(frame)))
    raw = orjson.dumps(frame).decode()
    assert len(raw) == 64 * 1024
    await client.send_raw(raw)
    assert (await client.request("user.profile"))["user_id"] == "alice"  # still open


@pytest.mark.both_backends
async def test_join_reply_carries_seq_and_events_follow_in_order(
    harness: Harness, connect: Connect
) -> None:
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    viewer = await connect(harness, "viewer")
    joined = await viewer.request("room.join", live_id=live_id)
    assert joined["live_id"] == live_id and joined["relay"] is None
    assert joined["online_count"] == 2 and joined["push_url"] == ""
    seq = joined["seq"]
    other = await connect(harness, "other")
    await other.request("room.join", live_id=live_id)
    await other.request("chat.send", live_id=live_id, text="hello 你好")
    joined_event = await viewer.next_event()
    chat = await viewer.next_event()
    assert (joined_event["event"], joined_event["seq"]) == ("member.joined", seq + 1)
    assert joined_event["data"]["user"]["user_id"] == "other"
    assert (chat["event"], chat["seq"]) == ("chat.message", seq + 2)
    assert chat["data"]["text"] == "hello 你好" and chat["data"]["nick"] == "other"
    assert isinstance(chat["data"]["ts"], int)


@pytest.mark.both_backends
async def test_chat_needs_presence_and_bounded_text(harness: Harness, connect: Connect) -> None:
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    outsider = await connect(harness, "outsider")
    with pytest.raises(SignalError) as forbidden:
        await outsider.request("chat.send", live_id=live_id, text="hi")
    assert forbidden.value.code == 403
    with pytest.raises(SignalError) as too_long:
        await anchor.request("chat.send", live_id=live_id, text="字" * 2000)
    assert too_long.value.code == 400


@pytest.mark.both_backends
async def test_switching_rooms_detaches_every_socket_of_the_user(
    harness: Harness, connect: Connect
) -> None:
    a, b = await connect(harness, "anchor_a"), await connect(harness, "anchor_b")
    room_a, room_b = await live_room(a), await live_room(b)
    phone = await connect(harness, "viewer")
    tablet = await connect(harness, "viewer")
    await phone.request("room.join", live_id=room_a)
    await tablet.request("room.join", live_id=room_a)
    await harness.call("POST", f"/client/live/room/user/{room_b}", "viewer")
    left = await a.next_event("member.left")
    assert left["data"] == {"user_id": "viewer", "reason": "switched"}
    await a.request("chat.send", live_id=room_a, text="after the switch")
    await a.next_event("chat.message")
    await asyncio.sleep(0.05)  # let any wrongly routed event arrive
    assert not [e for e in phone.pending_events() + tablet.pending_events() if e.get("live_id")]
    info = await a.request("room.info", live_id=room_a)
    assert info["online_count"] == 1


@pytest.mark.both_backends
async def test_closing_the_last_socket_leaves_the_room(harness: Harness, connect: Connect) -> None:
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    phone, tablet = await connect(harness, "viewer"), await connect(harness, "viewer")
    await phone.request("room.join", live_id=live_id)
    await tablet.request("room.join", live_id=live_id)
    await phone.close()
    await tablet.request("chat.send", live_id=live_id, text="still here")
    assert (await anchor.next_event())["event"] == "member.joined"
    assert (await anchor.next_event())["event"] == "chat.message"  # no member.left yet
    await tablet.close()
    left = await anchor.next_event()
    assert left["event"] == "member.left"
    assert left["data"] == {"user_id": "viewer", "reason": "leave"}


@pytest.mark.both_backends
async def test_silent_client_is_closed_4008_and_leaves_with_timeout(
    harness: Harness, connect: Connect
) -> None:
    """On the harness's fake clock: pings every 5 s, silent for 3 x 5 s = gone."""
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)

    async def tick(seconds: float) -> None:
        harness.advance(seconds)
        await asyncio.sleep(0.05)  # the pings go out and the live client's pongs come back

    async with aiohttp.ClientSession() as session:
        url = f"{harness.ws_url}?token={harness.token('silent')}"
        # autoping=False and no reads: this client never answers the server's pings.
        async with session.ws_connect(url, autoping=False) as silent:
            await silent.send_str(
                orjson.dumps({"id": 1, "type": "room.join", "data": {"live_id": live_id}}).decode()
            )
            joined = await anchor.next_event("member.joined")
            assert joined["data"]["user"]["user_id"] == "silent"
            for _ in range(3):  # 15 s of silence: not yet over the timeout
                await tick(5)
            assert not [e for e in anchor.pending_events() if e["event"] == "member.left"]
            await tick(5)  # the next ping interval finds it silent for 20 s
            left = await anchor.next_event("member.left", timeout=2)
            assert left["data"] == {"user_id": "silent", "reason": "timeout"}
            close_code = None
            while close_code is None:
                message = await asyncio.wait_for(silent.receive(), 5)
                if message.type == aiohttp.WSMsgType.CLOSE:
                    close_code = message.data
                assert message.type not in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED)
            assert close_code == 4008
    # The anchor, answering pings through its library, is still connected and present.
    info = await anchor.request("room.info", live_id=live_id)
    assert info["online_count"] == 1 and info["anchor_status"] == 1


@pytest.mark.both_backends
async def test_resume_replays_exactly_the_missed_events(harness: Harness, connect: Connect) -> None:
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    viewer = await connect(harness, "viewer")
    await viewer.request("room.join", live_id=live_id)
    await anchor.request("chat.send", live_id=live_id, text="before")
    before = await viewer.next_event("chat.message")
    assert viewer._ws is not None
    viewer._ws.transport.abort()  # the network drops: no closing handshake
    await anchor.next_event("member.left")
    for index in range(3):
        await anchor.request("chat.send", live_id=live_id, text=f"missed {index}")
    resumed = await viewer.reconnect()
    assert resumed is not None and resumed["recovered"] is True
    replayed = viewer.pending_events()
    assert [e["seq"] for e in replayed] == list(range(before["seq"] + 1, resumed["seq"] + 1))
    assert [(e["event"], e["data"].get("text")) for e in replayed] == [
        ("member.left", None),
        ("chat.message", "missed 0"),
        ("chat.message", "missed 1"),
        ("chat.message", "missed 2"),
        ("member.joined", None),  # its own re-join: it was not present
    ]
    await anchor.request("chat.send", live_id=live_id, text="after")
    after = await viewer.next_event()
    assert (after["seq"], after["data"]["text"]) == (resumed["seq"] + 1, "after")


@pytest.mark.both_backends
async def test_resume_past_the_history_is_not_recovered(harness: Harness, connect: Connect) -> None:
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    viewer = await connect(harness, "viewer")
    joined = await viewer.request("room.join", live_id=live_id)
    await anchor.request("chat.send", live_id=live_id, text="old")
    await harness.pass_time(301)  # older than the 5 minutes the server must hold
    await anchor.request("chat.send", live_id=live_id, text="new")
    other = await connect(harness, "viewer")
    reply = await other.request("room.resume", live_id=live_id, since=joined["seq"])
    assert reply == {"recovered": False, "seq": joined["seq"] + 2}
    assert other.pending_events() == []
    await anchor.request("chat.send", live_id=live_id, text="newer")
    assert (await other.next_event())["data"]["text"] == "newer"
    with pytest.raises(SignalError) as ahead:
        await other.request("room.resume", live_id=live_id, since=reply["seq"] + 10)
    assert ahead.value.code == 400
    await anchor.request("room.delete", live_id=live_id)
    with pytest.raises(SignalError) as deleted:
        await other.request("room.resume", live_id=live_id, since=reply["seq"])
    assert deleted.value.code == 404


async def test_slow_consumer_is_closed_4009_while_the_room_keeps_receiving(
    harness: Harness, connect: Connect
) -> None:
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    reader = await connect(harness, "reader")
    await reader.request("room.join", live_id=live_id)
    text = "x" * 4000
    messages = 1500  # ~6 MB: more than loopback buffers plus the 1 MiB queue bound
    slow = await StalledClient.connect(f"{harness.ws_url}?token={harness.token('sleepy')}")
    try:
        await slow.send_text(
            orjson.dumps({"id": 1, "type": "room.join", "data": {"live_id": live_id}}).decode()
        )
        await reader.next_event("member.joined")
        for _ in range(messages):
            await anchor.request("chat.send", live_id=live_id, text=text)
        received = []
        while sum(e["event"] == "chat.message" for e in received) < messages:
            received.append(await reader.next_event())
        # Every chat message reached the reader, in order, and the stalled member was dropped.
        assert [e["seq"] for e in received] == list(
            range(received[0]["seq"], received[0]["seq"] + len(received))
        )
        left = [e["data"] for e in received if e["event"] == "member.left"]
        assert left == [{"user_id": "sleepy", "reason": "leave"}]
        # The slow client, reading at last, finds the stream cut with 4009.
        assert await slow.read_until_close() == 4009
    finally:
        slow.abort()


async def test_expired_token_closes_4001_unless_refreshed(harness: Harness) -> None:
    short = await SignalClient.connect(harness.ws_url, harness.token("alice", ttl=60))
    refreshed = await SignalClient.connect(harness.ws_url, harness.token("alice", ttl=60))
    try:
        reply = await refreshed.request("auth.refresh", token=harness.token("alice", ttl=3600))
        assert reply["exp"] == int(harness.clock.now()) + 3600
        with pytest.raises(SignalError) as other_user:
            await refreshed.request("auth.refresh", token=harness.token("mallory"))
        assert other_user.value.code == 403
        for _ in range(13):  # 65 s of the fake clock, in ping intervals both sockets answer
            harness.advance(5)
            await asyncio.sleep(0.02)
        assert await short.wait_closed() == 4001
        assert (await refreshed.request("user.profile"))["user_id"] == "alice"
    finally:
        await short.close()
        await refreshed.close()


async def test_pipelining_slow_consumer_gets_its_4009_not_a_reset(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    harness = await make_harness()
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    slow = await StalledClient.connect(f"{harness.ws_url}?token={harness.token('flooder')}")
    try:
        join = {"id": 0, "type": "room.join", "data": {"live_id": live_id}}
        await slow.send_text(orjson.dumps(join).decode())
        await anchor.next_event("member.joined")
        # ~1.8 MB of pipelined requests whose ~1 KB replies it does not read: well past the
        # 1 MiB bound, and still sending when the server decides to close.
        request = orjson.dumps({"id": 1, "type": "room.info", "data": {"live_id": live_id}})
        for _ in range(20_000):
            slow.protocol.send_text(request)
        for data in slow.protocol.data_to_send():
            slow.writer.write(data)
        left = await anchor.next_event("member.left")
        assert left["data"] == {"user_id": "flooder", "reason": "leave"}
        # Reading at last, the client finds every reply the server had queued, then 4009.
        assert await slow.read_until_close() == 4009
    finally:
        slow.abort()
