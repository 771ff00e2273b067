"""media.published / media.unpublished reach the sockets joined to the live room (PROTOCOL §4.3).

The whole server (signalling and gateway on one app) on the memory store and on Redis: a
viewer's WebSocket joins a live room, and a client publishes into the gateway room of the
same id through /exchange, /wechat/exchange or /rtmp/exchange.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription

from livesignal.client import SignalClient
from livesignal.media.http.mount import GATEWAY_KEY
from livesignal.signal.model.errors import StoreUnavailable
from tests.conftest import Connect, Harness, HarnessFactory, live_room
from tests.ports import free_port

from . import _rtc as rtc
from ._servers import Nginx, ffmpeg_push_args, needs_rtmp, stop_process

# No event is due: how long a test waits to be sure none comes.
QUIET = 0.3


class Http:
    """The `post` of tests/media/_rtc against the harness's server."""

    def __init__(self, h: Harness) -> None:
        self._h = h

    def post(self, path: str, **kwargs: Any) -> Any:
        return self._h.session.post(self._h.base_url + path, **kwargs)


@dataclass
class Room:
    h: Harness
    live_id: str
    viewer: SignalClient
    http: Http

    def token(self, user: str, room: str | None = None) -> str:
        gateway = self.h.server.app[GATEWAY_KEY]
        return gateway.tokens.issue(room or self.live_id, user, self.h.clock.now())

    async def post(self, path: str, user: str, body: Any = None) -> Any:
        reply = await rtc.post(self.http, path, self.token(user), self.live_id, body)
        assert reply["resultCode"] == 10000, reply
        return reply

    async def publish(self, user: str, *tracks: Any) -> rtc.RtcClient:
        return await rtc.connect(self.http, self.token(user), self.live_id, publish=list(tracks))


async def open_room(make_harness: HarnessFactory, connect: Connect, **overrides: Any) -> Room:
    h = await make_harness(overrides, manual_clock=False)
    anchor = await connect(h, "anchor")
    live_id = await live_room(anchor)
    viewer = await connect(h, "viewer")
    await viewer.request("room.join", live_id=live_id)
    return Room(h, live_id, viewer, Http(h))


async def no_event(client: SignalClient, name: str) -> None:
    await asyncio.sleep(QUIET)
    assert [e for e in client.pending_events() if e["event"] == name] == []


def described(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(reply["publishList"], key=lambda r: r["uri"])


@pytest.mark.both_backends
async def test_exchange_publish_and_exit_are_announced_in_the_room(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    room = await open_room(make_harness, connect)
    alice = await room.publish("alice", rtc.SyntheticAudio(), rtc.SyntheticVideo())

    # one event for the exchange, carrying both resources as the reply described them
    published = await room.viewer.next_event("media.published")
    assert published["live_id"] == room.live_id
    assert published["data"]["user_id"] == "alice"
    assert sorted(published["data"]["resources"], key=lambda r: r["uri"]) == described(alice.reply)
    assert {r["mediaType"] for r in published["data"]["resources"]} == {0, 1}

    await room.post("/exit", "alice")
    unpublished = await room.viewer.next_event("media.unpublished")
    assert unpublished["data"] == {
        "user_id": "alice",
        "uris": [r["uri"] for r in alice.reply["publishList"]],
    }
    assert unpublished["seq"] == published["seq"] + 1
    await alice.close()

    # room events like any other: a socket resuming from before them gets both again
    late = await connect(room.h, "late")
    await late.request("room.resume", live_id=room.live_id, since=published["seq"] - 1)
    replayed = [await late.next_event() for _ in range(2)]
    assert [e["event"] for e in replayed] == ["media.published", "media.unpublished"]


async def test_a_dropped_peer_connection_is_announced_as_unpublished(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    room = await open_room(make_harness, connect)
    alice = await room.publish("alice", rtc.SyntheticVideo())
    (uri,) = [r["uri"] for r in alice.reply["publishList"]]
    await room.viewer.next_event("media.published")
    gateway = room.h.server.app[GATEWAY_KEY]
    server_pc = gateway.media.connection(room.live_id, "alice")
    assert server_pc is not None
    await rtc.wait_for(lambda: server_pc.connectionState == "connected", 5)

    # the client goes away without /exit: its DTLS close ends the server's connection
    await alice.close()
    unpublished = await room.viewer.next_event("media.unpublished", timeout=10)
    assert unpublished["data"] == {"user_id": "alice", "uris": [uri]}
    assert gateway.media.resources(room.live_id) == []


async def test_wechat_exchange_and_exit_are_announced(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    nowhere = f"rtmp://127.0.0.1:{free_port()}/live"  # the pull just keeps retrying
    room = await open_room(
        make_harness, connect, stream={"publish_base": nowhere, "rtmp_play_base": nowhere}
    )
    reply = await room.post("/wechat/exchange", "wx", {"rtmp": {"audio": True, "video": True}})
    assert len(reply["publishList"]) == 2
    published = await room.viewer.next_event("media.published")
    assert published["data"]["user_id"] == "wx"
    assert sorted(published["data"]["resources"], key=lambda r: r["uri"]) == described(reply)

    await room.post("/wechat/exit", "wx")
    unpublished = await room.viewer.next_event("media.unpublished")
    assert sorted(unpublished["data"]["uris"]) == [r["uri"] for r in described(reply)]
    assert unpublished["data"]["user_id"] == "wx"


@pytest.mark.both_backends
async def test_media_of_a_gateway_room_that_is_no_live_room_is_not_announced(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    room = await open_room(make_harness, connect)
    other = "not-a-live-room"
    token = room.token("alice", other)
    alice = await rtc.connect(room.http, token, other, publish=[rtc.SyntheticVideo()])
    assert len(alice.reply["publishList"]) == 1
    assert await rtc.post(room.http, "/exit", token, other, None) == {"resultCode": 10000}
    await alice.close()
    await no_event(room.viewer, "media.published")
    # and the lookups left nothing behind: the room is still unknown, no store key names it
    info = await room.h.call("GET", f"/client/live/room/info/{other}", "viewer")
    assert info.code == 404
    if room.h.settings.store.backend == "redis":
        client = redis.asyncio.from_url(room.h.settings.store.redis_url)
        try:
            keys = await client.keys(f"*{other}*")
        finally:
            await client.aclose()
        # only the gateway's own (ls:media:*, which node holds the room's media) may
        assert [key for key in keys if not key.startswith(b"ls:media:")] == []


async def test_a_store_that_fails_never_fails_the_media_request(
    make_harness: HarnessFactory,
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    room = await open_room(make_harness, connect)
    attempts = 0

    async def down(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        raise StoreUnavailable()

    for method in ("published", "unpublished"):
        monkeypatch.setattr(room.h.services.media_events, method, down)
    with caplog.at_level(logging.WARNING, logger="livesignal.media.announce"):
        alice = await room.publish("alice", rtc.SyntheticVideo())
        assert await room.post("/exit", "alice") == {"resultCode": 10000}
        await alice.close()
        await rtc.wait_for(lambda: attempts == 2, 5)
    assert sum("not sent" in r.getMessage() for r in caplog.records) == 2
    await no_event(room.viewer, "media.published")


# --- RTMP: a source that stops (the publisher went away) and comes back ----------------------


@pytest.fixture
async def rtmp_room(make_harness: HarnessFactory, connect: Connect, rtmp_port: int) -> Room:
    base = f"rtmp://127.0.0.1:{rtmp_port}/live"
    stream = {
        "publish_base": base,
        "rtmp_play_base": base,
        "security": "expiry",
        "publish_key": secrets.token_urlsafe(16),
    }
    return await open_room(make_harness, connect, stream=stream)


@pytest.fixture
def client(rtmp_room: Room) -> Any:
    """What the `nginx` fixture needs of a client: the port its on_publish calls."""
    return SimpleNamespace(server=rtmp_room.h.server)


async def listed(room: Room, *, until: list[str] | None = None) -> list[str]:
    """The uris GET /media/resources lists for the room; with `until`, polled (bounded)
    until it lists exactly those."""
    deadline = time.monotonic() + 10
    while True:
        async with room.h.session.get(
            room.h.base_url + "/media/resources",
            params={"room_id": room.live_id},
            headers={"Token": room.token("relay")},
        ) as response:
            reply = await response.json()
        assert reply["resultCode"] == 10000, reply
        uris = [item["uri"] for item in reply["list"]]
        if until is None or uris == until:
            return uris
        assert time.monotonic() < deadline, f"listed {uris}, not {until}"
        await asyncio.sleep(0.05)


@needs_rtmp
async def test_an_rtmp_source_that_stops_is_unpublished_and_announced_again_when_back(
    rtmp_room: Room, nginx: Nginx, processes: Any
) -> None:
    """A pulled RTMP source that stops is announced gone and no longer listed; nobody new can
    subscribe to it, while a subscriber that has it keeps it. When it comes back, the same uri
    is announced and listed again, and the subscriber's video resumes."""
    room = rtmp_room
    push_url = room.h.server.app[GATEWAY_KEY].streams.push_url("cam", int(time.time()) + 600)
    first = processes(ffmpeg_push_args(push_url, 30, audio=False))
    body = {"rtmp": {"uri": nginx.url("cam"), "audio": False, "video": True}}
    reply = await room.post("/rtmp/exchange", "relay", body)
    (uri,) = [r["uri"] for r in reply["publishList"]]
    published = await room.viewer.next_event("media.published")
    assert published["data"] == {"user_id": "relay", "resources": reply["publishList"]}

    # a subscriber sees the stream: the pull is connected
    watcher = await rtc.connect(
        room.http, room.token("watcher"), room.live_id, subscribe=[(uri, "video")]
    )
    await rtc.wait_for(lambda: uri in watcher.received and watcher.received[uri].frames > 0, 10)
    assert await listed(room) == [uri]

    stop_process(first)  # the publisher goes away: the room hears it, and the listing agrees
    stopped = await room.viewer.next_event("media.unpublished", timeout=10)
    assert stopped["data"] == {"user_id": "relay", "uris": [uri]}
    assert await listed(room, until=[]) == []
    # nobody new can subscribe to it, as to any resource announced as gone
    late = RTCPeerConnection(rtc.CONFIG)
    late.addTransceiver("video", direction="recvonly")
    await late.setLocalDescription(await late.createOffer())
    offer = {"type": "offer", "sdp": late.localDescription.sdp}
    refused = await rtc.post(
        room.http,
        "/exchange",
        room.token("late"),
        room.live_id,
        {"sdp": offer, "subscribeList": [{"uri": uri}]},
    )
    await late.close()
    assert refused["resultCode"] == 40002, refused
    # while the watcher, who took it before, keeps it when it renegotiates
    await watcher.pc.setLocalDescription(await watcher.pc.createOffer())
    offer = {"type": "offer", "sdp": watcher.pc.localDescription.sdp}
    kept = await room.post("/exchange", "watcher", {"sdp": offer, "subscribeList": [{"uri": uri}]})
    await watcher.pc.setRemoteDescription(RTCSessionDescription(kept["sdp"]["sdp"], "answer"))
    # the relay's own exchange, repeated, keeps its pull and the uri
    again = await room.post("/rtmp/exchange", "relay", body)
    assert [r["uri"] for r in again["publishList"]] == [uri]

    # and comes back: the pull reconnects, the same uri is announced and listed again
    processes(ffmpeg_push_args(push_url, 30, audio=False))
    back = await room.viewer.next_event("media.published", timeout=10)
    assert back["data"] == published["data"]
    assert await listed(room, until=[uri]) == [uri]
    frames = watcher.received[uri].frames
    await rtc.wait_for(lambda: watcher.received[uri].frames > frames + 10, 10)

    await room.post("/rtmp/exit", "relay")
    gone = await room.viewer.next_event("media.unpublished")
    assert gone["data"] == {"user_id": "relay", "uris": [uri]}
    assert await listed(room) == []
    await room.post("/exit", "watcher")
    await watcher.close()
    await no_event(room.viewer, "media.unpublished")  # announced once, not once per report
