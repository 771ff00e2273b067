"""The gateway's hooks into aiortc internals fail safe (livesignal.media.aiortc_taps).

If aiortc changes what a tap relies on, the gateway falls back to aiortc's own decoding path
instead of failing requests; and nothing a tap runs inside aiortc's RTP/RTCP handling may
raise there, since an exception in that loop ends the peer's whole DTLS transport.
"""

from __future__ import annotations

import logging
import queue
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from livesignal.media import aiortc_taps
from livesignal.media.aiortc_taps import forward_keyframe_requests, tap_encoded_frames
from livesignal.media.census import CENSUS
from livesignal.media.feed import FeedTrack
from livesignal.media.http.mount import GATEWAY_KEY

from ._rtc import SyntheticVideo, connect, post, wait_for

TokenFor = Callable[[str, str], str]
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
VP8_KEYFRAME = b"\x10\x02\x00\x9d\x01\x2a" + bytes(20)


class FakeReceiver:
    """Just the RTCRtpReceiver internals the tap checks for, before the receiver starts."""

    def __init__(self) -> None:
        setattr(self, aiortc_taps._STARTED, False)
        setattr(self, aiortc_taps._DECODER_QUEUE, queue.Queue())
        self.pli_sent = 0

    def getSynchronizationSources(self) -> list[Any]:
        raise RuntimeError("aiortc changed")

    async def _send_rtcp_pli(self, ssrc: int) -> None:
        self.pli_sent += 1


class BrokenFeed(FeedTrack):
    def feed(self, item: Any) -> None:
        raise RuntimeError("a bug in the feed")


async def test_a_frame_or_keyframe_request_that_fails_never_escapes_into_aiortc(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = FakeReceiver()
    feed = BrokenFeed("video", codec="vp8")
    assert tap_encoded_frames(receiver, feed)  # type: ignore[arg-type]
    decoder_queue = getattr(receiver, aiortc_taps._DECODER_QUEUE)
    with caplog.at_level(logging.ERROR, logger="livesignal.media.aiortc_taps"):
        for _ in range(3):
            decoder_queue.put((VP8, JitterFrame(VP8_KEYFRAME, 3000)))  # raises nothing
        assert feed.on_keyframe_request is not None
        feed.on_keyframe_request()  # getSynchronizationSources raises: logged, not raised
    messages = [r.getMessage() for r in caplog.records]
    assert sum("forwarding a video frame failed" in m for m in messages) == 1  # once
    assert any("keyframe request to the publisher failed" in m for m in messages)
    feed.stop()


async def test_a_receiver_without_the_expected_internals_is_left_alone() -> None:
    for missing in (aiortc_taps._DECODER_QUEUE, "_send_rtcp_pli"):
        receiver = FakeReceiver()
        if missing == "_send_rtcp_pli":
            receiver._send_rtcp_pli = None  # type: ignore[assignment,method-assign]
        else:
            delattr(receiver, missing)
        before = dict(vars(receiver))
        feed = FeedTrack("video", codec="vp8")
        assert not tap_encoded_frames(receiver, feed)  # type: ignore[arg-type]
        assert vars(receiver) == before and feed.on_keyframe_request is None
        feed.stop()


class FakeSender:
    def __init__(self) -> None:
        self.keyframes = 0

    def _send_keyframe(self) -> None:
        self.keyframes += 1


def test_keyframe_request_forwarding_fails_safe(caplog: pytest.LogCaptureFixture) -> None:
    # a sender without the hook: not wrapped, and said so
    bare = type("BareSender", (), {})()
    assert not forward_keyframe_requests(bare, lambda: None)
    assert not hasattr(bare, "_send_keyframe")

    # a hook that raises inside aiortc's RTCP handling: logged, the encoder still asked
    sender = FakeSender()

    def broken() -> None:
        raise RuntimeError("a bug in the hook")

    assert forward_keyframe_requests(sender, broken)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="livesignal.media.aiortc_taps"):
        sender._send_keyframe()
    assert sender.keyframes == 1
    assert any("forwarding a keyframe request failed" in r.getMessage() for r in caplog.records)

    # re-registering replaces the hook without wrapping twice
    calls: list[int] = []
    assert forward_keyframe_requests(sender, lambda: calls.append(1))  # type: ignore[arg-type]
    sender._send_keyframe()
    assert sender.keyframes == 2 and calls == [1]


async def test_without_the_receiver_tap_the_gateway_decodes_and_still_delivers(
    client: TestClient[Any, Any],
    media_app: web.Application,
    token_for: TokenFor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an aiortc whose receiver no longer has the decoder queue the tap replaces
    monkeypatch.setattr(aiortc_taps, "_DECODER_QUEUE", "_RTCRtpReceiver__gone")
    before = Counter(CENSUS.snapshot()["decoders"])
    alice = await connect(client, token_for("r", "alice"), "r", publish=[SyntheticVideo()])
    (uri,) = [item["uri"] for item in alice.reply["publishList"]]
    bob = await connect(client, token_for("r", "bob"), "r", subscribe=[(uri, "video")])
    try:
        await wait_for(lambda: uri in bob.received and bob.received[uri].frames >= 5, 10)
        started = Counter(CENSUS.snapshot()["decoders"]) - before
        # aiortc's own receiver decoded (H.264: preferred for a published video)
        assert started == Counter({"aiortc-h264": 1})
    finally:
        for user, rtc in (("alice", alice), ("bob", bob)):
            await post(client, "/exit", token_for("r", user), "r", None)
            await rtc.close()
    assert media_app[GATEWAY_KEY].media.peer_count() == 0
