"""Forwarding without re-encoding, with real aiortc peers (and nginx-rtmp + ffmpeg for RTMP).

A subscriber that takes the publisher's codec gets the publisher's encoded frames: the
gateway starts no decoder and no encoder for it (counted by `livesignal.media.census`), and a
late joiner's keyframe is requested from the publisher. Only a consumer that cannot take the
codec makes the gateway decode (once per resource) and encode (once per consumer).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc.codecs.h264 import H264Decoder, H264Encoder
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder

from livesignal.media.census import CENSUS
from livesignal.media.http.mount import GATEWAY_KEY
from livesignal.media.rtmp.worker import media_threads
from livesignal.media.sdp import parse as sdp

from ._rtc import (
    VIDEO_SIZE,
    RtcClient,
    SyntheticAudio,
    SyntheticVideo,
    connect,
    gateway_tasks,
    post,
    wait_for,
)
from ._servers import Nginx, needs_rtmp
from .test_rtmp import assert_plays

Client = TestClient[Any, Any]
TokenFor = Callable[[str, str], str]
Start = Callable[[list[str]], subprocess.Popen[bytes]]


def video_uri(reply: dict[str, Any]) -> str:
    (uri,) = [item["uri"] for item in reply["publishList"] if item["mediaType"] == 1]
    return str(uri)


def received_video_codec(rtc: RtcClient) -> str:
    """The codec the gateway's answer tells this client it will receive video in."""
    info = sdp.parse_offer(rtc.pc.remoteDescription.sdp)
    return next(m for m in info.media if m.kind == "video").codecs[0].name


def started_since(before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Decoders and encoders the gateway started since `before` (a CENSUS snapshot)."""
    now = CENSUS.snapshot()
    return {
        role: dict(+(Counter(now[role]) - Counter(before[role])))
        for role in ("decoders", "encoders")
    }


NOTHING = {"decoders": {}, "encoders": {}}


class CodecWork:
    """Which aiortc codec objects really encoded or decoded: a witness independent of the
    gateway's own CENSUS. The test's client peers share the process, so the counts include
    theirs: each publisher's sender encodes, each subscriber's receiver decodes."""

    def __init__(self) -> None:
        self.encoders: set[int] = set()
        self.decoders: set[int] = set()


@pytest.fixture
def codec_work(monkeypatch: pytest.MonkeyPatch) -> CodecWork:
    work = CodecWork()
    for cls in (Vp8Encoder, H264Encoder):
        original_encode = cls.encode

        def encode(self: Any, *args: Any, _original: Any = original_encode, **kw: Any) -> Any:
            work.encoders.add(id(self))
            return _original(self, *args, **kw)

        monkeypatch.setattr(cls, "encode", encode)
    for cls in (Vp8Decoder, H264Decoder):
        original_decode = cls.decode

        def decode(self: Any, *args: Any, _original: Any = original_decode, **kw: Any) -> Any:
            work.decoders.add(id(self))  # runs in aiortc's decoder thread; set.add is atomic
            return _original(self, *args, **kw)

        monkeypatch.setattr(cls, "decode", decode)
    return work


async def leave(client: Client, token_for: TokenFor, room: str, rtcs: dict[str, RtcClient]) -> None:
    for user, rtc in rtcs.items():
        assert await post(client, "/exit", token_for(room, user), room, None) == {
            "resultCode": 10000
        }
        await rtc.close()


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_subscribers_get_the_publishers_frames_without_decoding_or_encoding(
    client: Client,
    media_app: web.Application,
    token_for: TokenFor,
    codec: str,
    codec_work: CodecWork,
) -> None:
    tasks_before = gateway_tasks()
    census_before = CENSUS.snapshot()
    alice = await connect(
        client, token_for("r", "alice"), "r", publish=[SyntheticVideo()], video_codec=codec
    )
    uri = video_uri(alice.reply)
    viewers = {
        f"viewer{i}": await connect(
            client, token_for("r", f"viewer{i}"), "r", subscribe=[(uri, "video")]
        )
        for i in range(2)
    }
    peers = {"alice": alice, **viewers}
    try:
        for viewer in viewers.values():
            assert received_video_codec(viewer) == codec  # both offered VP8 and H.264
        await wait_for(
            lambda: all(
                uri in v.received and v.received[uri].frames >= 10 for v in viewers.values()
            ),
            10,
        )
        for viewer in viewers.values():
            assert viewer.received[uri].sizes == {VIDEO_SIZE}  # the subscriber decoded them
        assert started_since(census_before) == NOTHING

        # A late joiner: the publisher sent its last keyframe long ago (aiortc's encoders
        # make one only when asked), yet the first picture comes within one second.
        late = peers["late"] = await connect(
            client, token_for("r", "late"), "r", subscribe=[(uri, "video")]
        )
        await wait_for(lambda: late.pc.connectionState == "connected", 5, interval=0.005)
        connected = time.monotonic()
        await wait_for(lambda: uri in late.received and late.received[uri].frames >= 1, 2, 0.005)
        assert time.monotonic() - connected < 1.0
        await wait_for(lambda: late.received[uri].frames >= 10, 5)
        assert started_since(census_before) == NOTHING
        # and aiortc agrees: only alice's sender encoded, only the 3 subscribers decoded
        assert len(codec_work.encoders) == 1
        assert len(codec_work.decoders) == len(viewers) + 1
    finally:
        await leave(client, token_for, "r", peers)
    assert media_app[GATEWAY_KEY].media.peer_count() == 0
    await wait_for(lambda: gateway_tasks() <= tasks_before, 5)


async def test_a_subscriber_without_the_publishers_codec_gets_it_transcoded(
    client: Client, media_app: web.Application, token_for: TokenFor
) -> None:
    tasks_before = gateway_tasks()
    census_before = CENSUS.snapshot()
    alice = await connect(
        client, token_for("r", "alice"), "r", publish=[SyntheticVideo()], video_codec="VP8"
    )
    uri = video_uri(alice.reply)
    peers = {"alice": alice}
    try:
        for user in ("h264a", "h264b"):
            peers[user] = await connect(
                client, token_for("r", user), "r", subscribe=[(uri, "video")], video_codec="H264"
            )
            assert received_video_codec(peers[user]) == "H264"
        await wait_for(
            lambda: all(
                uri in peers[u].received and peers[u].received[uri].frames >= 10
                for u in ("h264a", "h264b")
            ),
            10,
        )
        assert {peers[u].received[uri].sizes == {VIDEO_SIZE} for u in ("h264a", "h264b")} == {True}
        # one decoder for the resource, one encoder per subscriber that needs one
        assert started_since(census_before) == {"decoders": {"vp8": 1}, "encoders": {"video": 2}}
    finally:
        await leave(client, token_for, "r", peers)
    await wait_for(lambda: gateway_tasks() <= tasks_before, 5)  # the shared decoder ended


@needs_rtmp
@pytest.mark.parametrize(
    ("codec", "video_work"),
    [
        ("H264", NOTHING),  # remuxed into FLV as it is
        ("VP8", {"decoders": {"vp8": 1}, "encoders": {"video": 1}}),  # transcoded to H.264
    ],
)
async def test_webrtc_publisher_reaches_rtmp(
    client: Client,
    media_app: web.Application,
    nginx: Nginx,
    token_for: TokenFor,
    processes: Start,
    codec: str,
    video_work: dict[str, dict[str, int]],
) -> None:
    """A mini-program's live-player subscribes to an RTC publisher's tracks: the gateway
    pushes them, as one RTMP stream, to the URL of its rtmpPlayList."""
    tasks_before = gateway_tasks()
    census_before = CENSUS.snapshot()
    alice = await connect(
        client,
        token_for("room1", "alice"),
        "room1",
        publish=[SyntheticAudio(), SyntheticVideo()],
        video_codec=codec,
    )
    uris = {item["mediaType"]: item["uri"] for item in alice.reply["publishList"]}
    wx_token = token_for("room1", "wx")
    try:
        reply = await post(
            client,
            "/wechat/exchange",
            wx_token,
            "room1",
            {
                "rtmp": {"audio": False, "video": False},
                "subscribeList": [{"uri": uris[1]}, {"uri": uris[0]}],
            },
        )
        assert reply["resultCode"] == 10000, reply
        assert reply["publishList"] == []
        play = {item["uri"]: item["rtmpUri"] for item in reply["rtmpPlayList"]}
        assert set(play) == {uris[0], uris[1]}
        (url,) = set(play.values())  # one publisher's audio+video: one RTMP stream
        assert url.startswith(nginx.url("")) and "?" not in url
        await assert_plays(processes, url, {"h264", "aac"})  # ffprobe, then ffmpeg decodes
        # Opus -> AAC is always transcoded; the video only when it is not H.264.
        audio_work = {"decoders": {"opus": 1}, "encoders": {"audio": 1}}
        assert started_since(census_before) == {
            role: {**audio_work[role], **video_work[role]} for role in audio_work
        }
    finally:
        assert await post(client, "/wechat/exit", wx_token, "room1", None) == {"resultCode": 10000}
        assert media_threads() == []  # the exit ended the push
        await leave(client, token_for, "room1", {"alice": alice})
    assert media_app[GATEWAY_KEY].media.peer_count() == 0
    await wait_for(lambda: gateway_tasks() <= tasks_before, 5)  # pumps, forwarders, relays
