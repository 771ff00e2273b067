"""RTMP <-> WebRTC through a real nginx-rtmp, with ffmpeg as the phone and the player."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from livesignal.media.http.mount import GATEWAY_KEY
from livesignal.media.rtmp.worker import media_threads
from livesignal.signal.model.auth import StreamUrls

from ._rtc import (
    connect,
    post,
    wait_for,
)
from ._servers import FFMPEG, Nginx, ffmpeg_push_args, needs_rtmp

pytestmark = needs_rtmp

Client = TestClient[Any, Any]
TokenFor = Callable[[str, str], str]
Start = Callable[[list[str]], subprocess.Popen[bytes]]


def uris_by_type(reply: dict[str, Any]) -> dict[int, str]:
    return {item["mediaType"]: item["uri"] for item in reply["publishList"]}


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.args!r} still running after {timeout}s")
        await asyncio.sleep(0.05)
    return process.returncode


async def test_wechat_push_reaches_an_rtc_subscriber(
    client: Client,
    media_app: web.Application,
    nginx: Nginx,
    token_for: TokenFor,
    processes: Start,
) -> None:
    threads_before = set(threading.enumerate())
    wx_token = token_for("room1", "wx")
    reply = await post(
        client, "/wechat/exchange", wx_token, "room1", {"rtmp": {"audio": True, "video": True}}
    )
    assert reply["resultCode"] == 10000, reply
    push_url = reply["rtmpPublishList"][0]["rtmpUri"]
    assert push_url.startswith(nginx.url("")) and "token=" in push_url
    published = uris_by_type(reply)
    assert set(published) == {0, 1}
    assert reply["rtmpPlayList"] == []

    # the mini-program's live-pusher, played by ffmpeg
    pusher = processes(ffmpeg_push_args(push_url, 30))

    viewer = await connect(
        client,
        token_for("room1", "viewer"),
        "room1",
        subscribe=[(published[1], "video"), (published[0], "audio")],
    )
    await wait_for(lambda: published[1] in viewer.received, 5)
    video = viewer.received[published[1]]
    audio = viewer.received[published[0]]
    await wait_for(lambda: video.frames >= 10 and audio.frames >= 10, 20)
    assert video.sizes == {(320, 240)}  # H.264 passed through, decoded by the subscriber
    assert pusher.poll() is None

    # a second mini-program plays the first one: pulled H.264 is decoded and re-encoded
    wx2_token = token_for("room1", "wx2")
    reply = await post(
        client,
        "/wechat/exchange",
        wx2_token,
        "room1",
        {
            "rtmp": {"audio": False, "video": False},
            "subscribeList": [{"uri": published[1]}, {"uri": published[0]}],
        },
    )
    play = {item["uri"]: item["rtmpUri"] for item in reply["rtmpPlayList"]}
    assert set(play) == {published[0], published[1]}
    assert len(set(play.values())) == 1
    await assert_plays(processes, play[published[1]], {"h264", "aac"})
    assert await post(client, "/wechat/exit", wx2_token, "room1", None) == {"resultCode": 10000}

    # exit stops the pull: its thread ends, the room's resources go away
    assert await post(client, "/wechat/exit", wx_token, "room1", None) == {"resultCode": 10000}
    gateway = media_app[GATEWAY_KEY]
    assert gateway.media.resources("room1") == []
    assert gateway.bridge.client_count() == 0 and gateway.wechat.client_count() == 0
    assert media_threads() == []
    await post(client, "/exit", token_for("room1", "viewer"), "room1", None)
    await viewer.close()
    await wait_for(lambda: set(threading.enumerate()) - threads_before <= _executor(), 5)


async def assert_plays(start: Start, url: str, codecs: set[str]) -> None:
    """ffprobe sees `codecs` (video 320x240) at `url`, and ffmpeg decodes 15 frames of it."""
    probe = start(
        ["ffprobe", "-v", "error", "-rw_timeout", "15000000", "-show_entries",
         "stream=codec_name,width,height", "-of", "json", url]
    )  # fmt: skip
    assert await wait_exit(probe, 20) == 0, probe.stderr.read() if probe.stderr else ""
    assert probe.stdout is not None
    streams = json.loads(probe.stdout.read())["streams"]
    assert {s["codec_name"] for s in streams} == codecs
    video = [(s.get("width"), s.get("height")) for s in streams if s["codec_name"] == "h264"]
    assert video == [(320, 240)]
    decode = start(
        [FFMPEG, "-nostdin", "-v", "error", "-rw_timeout", "15000000", "-i", url,
         "-frames:v", "15", "-f", "null", "-"]
    )  # fmt: skip
    assert await wait_exit(decode, 20) == 0, decode.stderr.read() if decode.stderr else ""


def _executor() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("asyncio_")}


async def test_unsigned_or_expired_push_is_refused_by_nginx(
    nginx: Nginx, stream_urls: StreamUrls, processes: Start
) -> None:
    now = int(time.time())
    refused = {
        "unsigned": nginx.url("sneaky"),
        "expired": stream_urls.push_url("sneaky", now - 5),
        "forged": stream_urls.push_url("sneaky", now + 600).replace("token=", "token=x"),
    }
    pushes = {name: processes(ffmpeg_push_args(url, 5)) for name, url in refused.items()}
    accepted = processes(ffmpeg_push_args(stream_urls.push_url("fine", now + 600), 1))
    for name, process in pushes.items():
        assert await wait_exit(process, 10) != 0, name
    assert await wait_exit(accepted, 15) == 0, accepted.stderr.read() if accepted.stderr else ""


async def test_rtmp_exchange_pulls_a_stream_into_the_room(
    client: Client,
    media_app: web.Application,
    nginx: Nginx,
    token_for: TokenFor,
    stream_urls: StreamUrls,
    processes: Start,
) -> None:
    processes(ffmpeg_push_args(stream_urls.push_url("cam", int(time.time()) + 600), 30))
    token = token_for("room2", "gateway")
    body = {"rtmp": {"uri": nginx.url("cam"), "audio": False, "video": True, "timestamp": 2}}
    reply = await post(client, "/rtmp/exchange", token, "room2", body)
    assert reply["resultCode"] == 10000, reply
    (video_uri,) = [item["uri"] for item in reply["publishList"] if item["mediaType"] == 1]
    assert len(reply["publishList"]) == 1

    # the same request again, or an older one, keeps the running pull and its uri
    for timestamp in (2, 1):
        body["rtmp"]["timestamp"] = timestamp
        again = await post(client, "/rtmp/exchange", token, "room2", body)
        assert [item["uri"] for item in again["publishList"]] == [video_uri]

    viewer = await connect(
        client, token_for("room2", "viewer"), "room2", subscribe=[(video_uri, "video")]
    )
    await wait_for(lambda: video_uri in viewer.received, 5)
    await wait_for(lambda: viewer.received[video_uri].frames >= 10, 20)

    assert await post(client, "/rtmp/exit", token, "room2", None) == {"resultCode": 10000}
    assert media_app[GATEWAY_KEY].media.resources("room2") == []
    assert media_threads() == []
    await post(client, "/exit", token_for("room2", "viewer"), "room2", None)
    await viewer.close()
