"""Shutting the app down tears down every peer, pull and push the gateway started, and
exchanges that arrive meanwhile are refused cleanly, starting nothing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection

from livesignal.media.http.mount import GATEWAY_KEY
from livesignal.media.rtmp.worker import media_threads
from tests.ports import free_port

from ._rtc import (
    CONFIG,
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


async def offer_of(pc: RTCPeerConnection) -> dict[str, Any]:
    pc.addTrack(SyntheticVideo())
    await pc.setLocalDescription(await pc.createOffer())
    return {"sdp": {"type": "offer", "sdp": pc.localDescription.sdp}}


SHUTTING_DOWN = {"resultCode": 50000, "message": "the gateway is shutting down"}


def assert_refused_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    refusals = [r for r in caplog.records if "shutting down" in r.getMessage()]
    assert refusals and all(r.levelno in (logging.INFO, logging.WARNING) for r in refusals)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_exchanges_arriving_during_shutdown_are_refused_cleanly(
    aiohttp_client: MakeClient,
    media_app: web.Application,
    token_for: TokenFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await aiohttp_client(media_app)
    gateway = media_app[GATEWAY_KEY]
    await gateway.close()  # what the app's on_shutdown runs; requests may still arrive
    pc = RTCPeerConnection(CONFIG)
    nowhere = f"rtmp://127.0.0.1:{free_port()}/live"
    try:
        with caplog.at_level(logging.INFO, logger="livesignal"):
            token = token_for("r", "late")
            assert await post(client, "/exchange", token, "r", await offer_of(pc)) == SHUTTING_DOWN
            rtmp = {"rtmp": {"uri": f"{nowhere}/in"}}
            assert await post(client, "/rtmp/exchange", token, "r", rtmp) == SHUTTING_DOWN
            assert await post(client, "/wechat/exchange", token, "r", {}) == SHUTTING_DOWN
    finally:
        await pc.close()
    assert_refused_without_traceback(caplog)
    # nothing was started that shutdown would have had to stop
    assert gateway.media.peer_count() == 0
    assert gateway.bridge.client_count() == 0
    assert media_threads() == []
    assert open_peer_connections() == []


async def test_an_exchange_negotiating_when_shutdown_starts_leaves_no_connection(
    client: TestClient[Any, Any],
    media_app: web.Application,
    token_for: TokenFor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    media = media_app[GATEWAY_KEY].media
    negotiate = media._negotiate

    async def negotiate_then_shut_down(*args: Any) -> None:
        await negotiate(*args)
        await media.close()  # shutdown starts while the exchange is under way

    monkeypatch.setattr(media, "_negotiate", negotiate_then_shut_down)
    pc = RTCPeerConnection(CONFIG)
    try:
        with caplog.at_level(logging.INFO, logger="livesignal"):
            body = await offer_of(pc)
            assert await post(client, "/exchange", token_for("r", "u"), "r", body) == SHUTTING_DOWN
    finally:
        await pc.close()
    assert_refused_without_traceback(caplog)
    assert media.peer_count() == 0
    assert media.resources("r") == []
    assert open_peer_connections() == []
