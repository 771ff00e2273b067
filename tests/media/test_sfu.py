"""The media server with real aiortc peers: publish, subscribe, renegotiate, exit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc import RTCSessionDescription

from livesignal.media.http.mount import GATEWAY_KEY

from ._rtc import (
    VIDEO_SIZE,
    SyntheticAudio,
    SyntheticVideo,
    connect,
    gateway_tasks,
    headers,
    live_threads,
    open_peer_connections,
    post,
    wait_for,
)

Client = TestClient[Any, Any]
TokenFor = Callable[[str, str], str]


def publish_uris(reply: dict[str, Any]) -> dict[int, str]:
    return {item["mediaType"]: item["uri"] for item in reply["publishList"]}


async def test_publish_then_subscribe_delivers_decodable_audio_and_video(
    client: Client, media_app: web.Application, token_for: TokenFor
) -> None:
    tasks_before = gateway_tasks()
    threads_before = live_threads()

    alice = await connect(
        client, token_for("room1", "alice"), "room1", publish=[SyntheticAudio(), SyntheticVideo()]
    )
    published = publish_uris(alice.reply)
    assert set(published) == {0, 1}
    assert len({item["msid"] for item in alice.reply["publishList"]}) == 1  # one stream

    listing = await (
        await client.get(
            "/media/resources",
            params={"room_id": "room1"},
            headers={"Token": token_for("room1", "bob")},
        )
    ).json()
    assert sorted((r["mediaType"], r["uri"], r["user_id"]) for r in listing["list"]) == [
        (0, published[0], "alice"),
        (1, published[1], "alice"),
    ]

    bob = await connect(
        client,
        token_for("room1", "bob"),
        "room1",
        subscribe=[(published[1], "video"), (published[0], "audio")],
    )
    assert {(s["uri"], s["mediaType"]) for s in bob.reply["subscribeList"]} == {
        (published[0], 0),
        (published[1], 1),
    }
    assert bob.reply["publishList"] == []
    # the subscriber's received tracks carry the resource uri as their id
    await wait_for(lambda: set(bob.received) == set(published.values()), 5)
    video, audio = bob.received[published[1]], bob.received[published[0]]
    await wait_for(lambda: video.frames >= 10 and audio.frames >= 10, 10)
    assert video.sizes == {VIDEO_SIZE}

    # exit tears everything down: no peer connection, task or thread is left behind
    for user, rtc in (("alice", alice), ("bob", bob)):
        reply = await post(client, "/exit", token_for("room1", user), "room1", None)
        assert reply == {"resultCode": 10000}
        await rtc.close()
    gateway = media_app[GATEWAY_KEY]
    assert gateway.media.peer_count() == 0
    assert gateway.media.resources("room1") == []
    assert open_peer_connections() == []
    await wait_for(lambda: gateway_tasks() <= tasks_before, 5)
    await wait_for(lambda: live_threads() <= threads_before, 5)


async def test_withdrawn_resource_leaves_subscriber_connected_and_listing_empty(
    client: Client, media_app: web.Application, token_for: TokenFor
) -> None:
    alice = await connect(client, token_for("r", "alice"), "r", publish=[SyntheticVideo()])
    uri = publish_uris(alice.reply)[1]
    bob = await connect(client, token_for("r", "bob"), "r", subscribe=[(uri, "video")])
    await wait_for(lambda: uri in bob.received and bob.received[uri].frames >= 3, 10)

    await post(client, "/exit", token_for("r", "alice"), "r", None)
    await alice.close()
    gateway = media_app[GATEWAY_KEY]
    assert gateway.media.resources("r") == []
    assert gateway.media.peer_count() == 1  # bob stays; his m-line just goes quiet
    # subscribing to a withdrawn uri is a bad request
    reply = await post(
        client,
        "/exchange",
        token_for("r", "carol"),
        "r",
        {
            "sdp": {"type": "offer", "sdp": bob.pc.localDescription.sdp},
            "subscribeList": [{"uri": uri}],
        },
    )
    assert reply["resultCode"] == 40002
    await bob.close()


async def test_same_client_renegotiates_to_add_a_subscription(
    client: Client, media_app: web.Application, token_for: TokenFor
) -> None:
    alice = await connect(
        client, token_for("r", "alice"), "r", publish=[SyntheticAudio(), SyntheticVideo()]
    )
    uris = publish_uris(alice.reply)
    bob_token = token_for("r", "bob")
    bob = await connect(client, bob_token, "r", subscribe=[(uris[1], "video")])
    await wait_for(lambda: uris[1] in bob.received and bob.received[uris[1]].frames >= 3, 10)
    first_pc = media_app[GATEWAY_KEY].media.connection("r", "bob")
    assert first_pc is not None

    # a second offer from the same RTCPeerConnection adds an audio subscription
    bob.pc.addTransceiver("audio", direction="recvonly")
    await bob.pc.setLocalDescription(await bob.pc.createOffer())
    reply = await post(
        client,
        "/exchange",
        bob_token,
        "r",
        {
            "sdp": {"type": "offer", "sdp": bob.pc.localDescription.sdp},
            "subscribeList": [{"uri": uris[1]}, {"uri": uris[0]}],
        },
    )
    assert reply["resultCode"] == 10000, reply
    await bob.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"]["sdp"], "answer"))
    assert media_app[GATEWAY_KEY].media.connection("r", "bob") is first_pc
    await wait_for(lambda: uris[0] in bob.received and bob.received[uris[0]].frames >= 5, 10)
    video_frames = bob.received[uris[1]].frames
    await wait_for(lambda: bob.received[uris[1]].frames > video_frames + 3, 5)

    for user, rtc in (("alice", alice), ("bob", bob)):
        await post(client, "/exit", token_for("r", user), "r", None)
        await rtc.close()
    assert media_app[GATEWAY_KEY].media.peer_count() == 0


async def test_exchange_with_headers_in_either_spelling(
    client: Client, token_for: TokenFor
) -> None:
    pc_client = await connect(client, token_for("r", "dave"), "r", publish=[SyntheticVideo()])
    try:
        response = await client.post(
            "/exit", headers=headers(token_for("r", "dave"), "r", legacy=True)
        )
        assert await response.json() == {"resultCode": 10000}
    finally:
        await pc_client.close()
