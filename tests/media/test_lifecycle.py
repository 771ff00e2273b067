"""Shutting the app down tears down every peer, pull and push the gateway started."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from livesignal.media.routes import GATEWAY_KEY
from livesignal.media.rtmp import media_threads
from tests.ports import free_port

from ._rtc import (
    SyntheticAudio,
    SyntheticVideo,
    connect,
    open_peer_connections,
    post,
    wait_for,
)

TokenFor = Callable[[str, str], str]
MakeClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


async def test_app_shutdown_stops_peers_pulls_and_pushes(
    aiohttp_client: MakeClient, media_app: web.Application, token_for: TokenFor
) -> None:
    client = await aiohttp_client(media_app)
    nowhere = f"rtmp://127.0.0.1:{free_port()}/live"  # nothing listens: both keep retrying
    alice = await connect(
        client, token_for("r", "alice"), "r", publish=[SyntheticAudio(), SyntheticVideo()]
    )
    uris = [item["uri"] for item in alice.reply["publishList"]]
    reply = await post(
        client,
        "/rtmp/exchange",
        token_for("r", "relay"),
        "r",
        {
            "rtmp": {
                "uri": f"{nowhere}/in",
                "rtmpSubscribeList": [{"userId": "alice", "rtmpUri": f"{nowhere}/out"}] * 2,
            },
            "rtc": {"subscribeList": [{"uri": uri} for uri in uris]},
        },
    )
    assert reply["resultCode"] == 10000, reply
    assert len(reply["publishList"]) == 2  # audio and video, published before they arrive
    await wait_for(lambda: len(media_threads()) == 2, 5)  # one pull, one push

    gateway = media_app[GATEWAY_KEY]
    await client.close()  # runs the app's on_shutdown / on_cleanup

    assert gateway.media.peer_count() == 0
    assert gateway.bridge.client_count() == 0
    assert media_threads() == []
    await alice.close()
    assert open_peer_connections() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("livesignal-")]
