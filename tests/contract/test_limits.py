"""PROTOCOL §7: no client can hurt another. Each test replays an attack from issue 7 and checks
that it fails while everyone else carries on.

Rates are tested on the harness's ManualClock: a bucket refills only when the test moves time.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import aiohttp
import orjson
import pytest

from livesignal.client import SignalError
from tests.conftest import Connect, Harness, HarnessFactory, live_room
from tests.rest_helpers import assert_error, assert_ok, b64, hmac_sha1_b64

PROFILE = "/client/user/user"
CREATE = "/client/live/room/instance"
SEARCH = "/client/live/room"


def big_map(size: int, key_prefix: str = "k") -> dict[str, str]:
    """A string map whose compact JSON is exactly `size` bytes (size >= 9)."""
    overhead = len(orjson.dumps({f"{key_prefix}0": ""}))
    return {f"{key_prefix}0": "v" * (size - overhead)}


async def make_live_room(h: Harness, anchor: str, **body: Any) -> str:
    live_id = assert_ok(await h.call("POST", CREATE, anchor, json={"title": "t", **body}))[
        "live_id"
    ]
    assert_ok(await h.call("PUT", f"/client/live/room/{live_id}", anchor))
    return str(live_id)


# --- 1. bounded values: one member cannot make an event that closes everyone else -----------------


async def test_a_bloated_profile_is_refused_and_the_room_keeps_its_sockets(
    harness: Harness, connect: Connect
) -> None:
    h = harness
    anchor = await connect(h, "anchor")
    live_id = await live_room(anchor)
    viewers = [await connect(h, f"viewer{i}") for i in range(3)]
    for viewer in viewers:
        await viewer.request("room.join", live_id=live_id)
    # The attack: a profile grown past 1 MiB by repeated merges. The first oversized map is
    # refused outright; maps that fit one by one are refused once the merge outgrows the cap.
    reply = await h.call("PUT", PROFILE, "mallory", json={"extends": big_map(60_000)})
    assert_error(reply, 400, 400)
    assert "extends" in reply.body["message"]
    grown = 0
    for index in range(20):
        reply = await h.call(
            "PUT", PROFILE, "mallory", json={"extends": big_map(1500, f"k{index}_")}
        )
        if reply.status == 200:
            grown += 1
        else:
            assert_error(reply, 400, 400)
    assert grown == 2  # 2 x 1.5 KB fit in 4096 bytes, a third does not
    profile = assert_ok(await h.call("GET", "/client/user/profile", "mallory"))
    assert len(orjson.dumps(profile["extends"])) <= 4096
    # Nick and avatar are bounded too, and the message names the field.
    for field, size in (("nick", 65), ("avatar", 1025)):
        reply = await h.call("PUT", PROFILE, "mallory", json={field: "x" * size})
        assert_error(reply, 400, 400)
        assert field in reply.body["message"]
    assert_ok(
        await h.call("PUT", PROFILE, "mallory", json={"nick": "n" * 64, "avatar": "a" * 1024})
    )
    # The largest profile allowed joins: every socket of the room stays open and keeps going.
    mallory = await connect(h, "mallory")
    await mallory.request("room.join", live_id=live_id)
    for client in [anchor, *viewers]:
        joined = await client.next_event("member.joined")
        while joined["data"]["user"]["user_id"] != "mallory":
            joined = await client.next_event("member.joined")
        assert joined["data"]["user"]["nick"] == "n" * 64
    await anchor.request("chat.send", live_id=live_id, text="still here")
    for client in [anchor, *viewers, mallory]:
        assert (await client.next_event("chat.message"))["data"]["text"] == "still here"


async def test_room_and_relay_extends_and_chat_are_bounded(
    harness: Harness, connect: Connect
) -> None:
    h = harness
    alice, bob = await connect(h, "alice"), await connect(h, "bob")
    with pytest.raises(SignalError) as created:
        await alice.request("room.create", title="t", extends=big_map(4097))
    assert created.value.code == 400 and "extends" in created.value.message
    for field, size in (("notice", 1025), ("cover_url", 1025)):
        with pytest.raises(SignalError) as refused:
            await alice.request("room.create", title="t", **{field: "x" * size})
        assert refused.value.code == 400 and field in refused.value.message
    room_a = await live_room(alice)
    room_b = await live_room(bob)
    await alice.request("room.extends", live_id=room_a, extends=big_map(4000, "a"))
    with pytest.raises(SignalError) as merged:
        await alice.request("room.extends", live_id=room_a, extends=big_map(200, "b"))
    assert merged.value.code == 400
    info = await alice.request("room.info", live_id=room_a)
    assert len(orjson.dumps(info["extends"])) == 4000  # nothing of the refused merge stuck
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    relay_id = started["relay_id"]
    await bob.request("relay.accept", relay_id=relay_id)
    await alice.request("relay.extends", relay_id=relay_id, extends=big_map(4096, "a"))
    with pytest.raises(SignalError) as relay_merged:
        await bob.request("relay.extends", relay_id=relay_id, extends={"b": "1"})
    assert relay_merged.value.code == 400
    with pytest.raises(SignalError) as chat:
        await alice.request("chat.send", live_id=room_a, text="x" * 4097)
    assert chat.value.code == 400 and "text" in chat.value.message
    await alice.request("chat.send", live_id=room_a, text="é" * 2048)  # 4096 bytes


# --- 2. search amplification ----------------------------------------------------------------------


async def test_search_replies_stay_small_however_the_anchor_bloats(harness: Harness) -> None:
    h = harness
    assert_ok(
        await h.call(
            "PUT",
            PROFILE,
            "bloat",
            json={"nick": "n" * 64, "avatar": "a" * 1024, "extends": big_map(4096)},
        )
    )
    for _ in range(20):
        await make_live_room(h, "bloat", extends=big_map(4096), notice="n" * 1024)
    reply = await h.call("POST", CREATE, "bloat", json={"title": "one too many"})
    assert_error(reply, 429, 429)
    async with h.session.get(
        h.base_url + SEARCH, params={"page_size": "100"}, headers={"Authorization": h.token("u")}
    ) as response:
        raw = await response.read()
    assert orjson.loads(raw)["data"]["total_count"] == 20
    assert len(raw) < 256 * 1024  # was 19.5 MiB with unbounded profiles


@pytest.mark.both_backends
async def test_open_rooms_are_counted_per_anchor_until_they_end(harness: Harness) -> None:
    h = harness
    rooms = [
        assert_ok(await h.call("POST", CREATE, "alice", json={"title": f"r{i}"}))["live_id"]
        for i in range(20)
    ]
    assert_error(await h.call("POST", CREATE, "alice", json={"title": "r20"}), 429, 429)
    assert_ok(await h.call("POST", CREATE, "bob", json={"title": "bob's"}))
    assert_ok(await h.call("PUT", f"/client/live/room/{rooms[0]}", "alice"))
    assert_ok(await h.call("POST", f"/client/live/room/{rooms[0]}", "alice"))  # stopped
    assert_ok(await h.call("POST", CREATE, "alice", json={"title": "r20"}))
    assert_ok(await h.call("DELETE", f"/client/live/room/instance/{rooms[1]}", "alice"))
    assert_ok(await h.call("POST", CREATE, "alice", json={"title": "r21"}))


# --- 3. looking up a room that does not exist leaves nothing behind -------------------------------


@pytest.mark.both_backends
async def test_joining_rooms_that_do_not_exist_leaves_no_memory_behind(
    harness: Harness, connect: Connect
) -> None:
    client = await connect(harness, "prober")

    async def probe(ids: range) -> None:
        for index in ids:
            with pytest.raises(SignalError) as missing:
                await client.request("room.join", live_id=f"live_missing_{index}")
            assert missing.value.code == 404
            with pytest.raises(SignalError):
                await client.request("room.resume", live_id=f"live_missing_{index}", since=0)

    await probe(range(100))  # warm every cache and code path first
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        await probe(range(100, 600))
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Before the fix each probe kept a broker stream: +59 MiB for 2,000 ids, ~30 KB each. What
    # is allowed now, 128 bytes a probe, is what a lookup may leave in caches meanwhile.
    assert after - before < 500 * 128


# --- 4. sockets per user and per address ----------------------------------------------------------


async def ws_status(h: Harness, user: str, headers: dict[str, str] | None = None) -> int:
    """Open one more socket and keep it; the HTTP status of a refused upgrade, or 101."""
    try:
        ws = await h.session.ws_connect(f"{h.ws_url}?token={h.token(user)}", headers=headers)
    except aiohttp.WSServerHandshakeError as refused:
        return refused.status
    h_sockets.append(ws)
    return 101


h_sockets: list[aiohttp.ClientWebSocketResponse] = []


@pytest.fixture(autouse=True)
async def _close_opened_sockets() -> Any:
    yield
    while h_sockets:
        await h_sockets.pop().close()


async def test_the_eleventh_socket_of_a_user_is_refused(harness: Harness) -> None:
    h = harness
    assert [await ws_status(h, "greedy") for _ in range(10)] == [101] * 10
    assert await ws_status(h, "greedy") == 429
    assert await ws_status(h, "someone_else") == 101  # other users are not affected
    await h_sockets.pop(0).close()  # one of greedy's
    assert await ws_status(h, "greedy") == 101


async def test_sockets_per_address_trust_only_configured_proxies(
    make_harness: HarnessFactory,
) -> None:
    proxied = await make_harness(
        {"limits": {"sockets_per_ip": 2, "trusted_proxies": ["127.0.0.0/8"]}}
    )
    client_a = {"X-Forwarded-For": "198.51.100.7"}
    statuses = [await ws_status(proxied, f"u{i}", client_a) for i in range(3)]
    assert statuses == [101, 101, 429]
    # Another client behind the same proxy, and a spoofed hop left of the real client.
    assert await ws_status(proxied, "u3", {"X-Forwarded-For": "198.51.100.8"}) == 101
    spoofed = {"X-Forwarded-For": "203.0.113.1, 198.51.100.7"}
    assert await ws_status(proxied, "u4", spoofed) == 429
    direct = await make_harness({"limits": {"sockets_per_ip": 2}})
    # Without trusted proxies the header is ignored: all come from 127.0.0.1.
    statuses = [
        await ws_status(direct, f"d{i}", {"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(3)
    ]
    assert statuses == [101, 101, 429]


# --- 5. rates -------------------------------------------------------------------------------------


async def test_chat_beyond_the_rate_gets_429_and_the_socket_stays_open(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    h = await make_harness({"limits": {"chat_per_second": 10}})
    anchor = await connect(h, "anchor")
    live_id = await live_room(anchor)
    spammer, viewer = await connect(h, "spammer"), await connect(h, "viewer")
    for client in (spammer, viewer):
        await client.request("room.join", live_id=live_id)
    sent = refused = 0
    for _ in range(60):
        try:
            await spammer.request("chat.send", live_id=live_id, text="spam")
            sent += 1
        except SignalError as error:
            assert error.code == 429 and "retry" in error.message
            refused += 1
    assert (sent, refused) == (50, 10)  # burst 5x the rate, then nothing until time passes
    await anchor.request("chat.send", live_id=live_id, text="the anchor is not throttled")
    texts = []
    while len(texts) < 51:
        texts.append((await viewer.next_event("chat.message"))["data"]["text"])
    assert texts[-1] == "the anchor is not throttled"
    assert (await spammer.request("user.profile"))["user_id"] == "spammer"  # socket open
    h.advance(1.0)
    await spammer.request("chat.send", live_id=live_id, text="a second later")


async def test_rest_beyond_the_rate_gets_http_429_with_retry_after(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness({"limits": {"requests_per_second": 50}})
    token = h.token("busy")
    statuses = [
        (await h.call("GET", "/client/user/profile", token=token)).status for _ in range(101)
    ]
    assert statuses == [200] * 100 + [429]  # burst 2x the rate
    refused = await h.call("GET", "/client/user/profile", token=token)
    assert_error(refused, 429, 429)
    assert refused.headers["Retry-After"] == "1"
    # The socket upgrade is a request of the same user too, refused the same way.
    assert await ws_status(h, "busy") == 429
    assert_ok(await h.call("GET", "/client/user/profile", "calm"))
    admin = h.token("moderator", role="admin")
    for _ in range(150):
        assert_ok(await h.call("GET", "/client/user/profile", token=admin))
    h.advance(1.0)
    assert_ok(await h.call("GET", "/client/user/profile", token=token))


async def test_relay_starts_beyond_the_rate_are_429(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    h = await make_harness({"limits": {"relay_starts_per_minute": 30}})
    pest, target = await connect(h, "pest"), await connect(h, "target")
    room_a, room_b = await live_room(pest), await live_room(target)
    start = {"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": "target"}
    for _ in range(30):
        relay = await pest.request("relay.start", **start)
        await pest.request("relay.cancel", relay_id=relay["relay_id"])
    with pytest.raises(SignalError) as refused:
        await pest.request("relay.start", **start)
    assert refused.value.code == 429
    # Nobody else is kept from inviting the target meanwhile.
    friend = await connect(h, "friend")
    room_c = await live_room(friend)
    await friend.request(
        "relay.start", init_room_id=room_c, recv_room_id=room_b, recv_user_id="target"
    )
    h.advance(2.0)  # one start per 2 s refills
    with pytest.raises(SignalError) as busy:
        await pest.request("relay.start", **start)
    assert busy.value.code == 601  # past the rate check: the target is busy with friend


# --- 8. no shipped secrets, no eternal tokens -----------------------------------------------------


async def test_no_secret_ships_with_the_code(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """With no [rtc] or [stream] section, what the old defaults signed is refused."""
    h = harness
    live_id = await make_live_room(h, "anchor")
    payload = {
        "appId": "livesignal",
        "roomName": live_id,
        "userId": "anchor",
        "expireAt": int(h.clock.now()) + 600,
        "permission": "user",
    }
    enc = b64(orjson.dumps(payload))
    forged = f"ak:{hmac_sha1_b64('sk-change-me', enc)}:{enc}"
    async with h.session.get(
        h.base_url + "/media/resources",
        params={"room_id": live_id},
        headers={"Token": forged, "Room-Id": live_id},
    ) as response:
        assert (await response.json())["resultCode"] == 40001
    expire = int(h.clock.now()) + 600
    token = hmac_sha1_b64("change-me", f"/live/{live_id}?expire={expire}")
    form = {"app": "live", "name": live_id, "expire": str(expire), "token": token}
    async with h.session.post(h.base_url + "/media/rtmp/on_publish", data=form) as response:
        assert response.status == 403
    # The anchor's own push URL, signed with this process's random key, is let in.
    room = assert_ok(await h.call("GET", f"/client/live/room/info/{live_id}", "anchor"))
    query = dict(part.split("=", 1) for part in room["push_url"].split("?", 1)[1].split("&"))
    form = {"app": "live", "name": live_id, **query}
    async with h.session.post(h.base_url + "/media/rtmp/on_publish", data=form) as response:
        assert response.status == 200


def test_empty_secrets_are_random_per_process_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from livesignal.app import create_app
    from tests.conftest import make_settings

    settings = make_settings()
    with caplog.at_level("WARNING", logger="livesignal"):
        create_app(settings, run_sweeper=False)
    other = make_settings()
    create_app(other, run_sweeper=False)
    assert settings.rtc.secret_key and settings.stream.publish_key
    assert settings.rtc.secret_key != other.rtc.secret_key
    assert settings.stream.publish_key != other.stream.publish_key
    warned = "\n".join(record.getMessage() for record in caplog.records)
    assert "rtc.secret_key is empty" in warned and "stream.publish_key is empty" in warned
    assert settings.rtc.secret_key not in warned and settings.stream.publish_key not in warned
