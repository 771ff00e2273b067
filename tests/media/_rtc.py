"""aiortc clients for the gateway tests: synthetic publishers and counting subscribers."""

from __future__ import annotations

import asyncio
import fractions
import gc
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

# No STUN: every candidate is a loopback host candidate (see conftest).
CONFIG = RTCConfiguration(iceServers=[])
VIDEO_SIZE = (320, 240)


class SyntheticVideo(MediaStreamTrack):
    """A moving gradient at 30 fps."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        self._count += 1
        await asyncio.sleep(max(0.0, self._start + self._count / 30 - time.monotonic()))
        width, height = VIDEO_SIZE
        ramp = (np.arange(width, dtype=np.uint16)[None, :] + self._count * 4) % 256
        image = np.repeat(ramp.astype(np.uint8)[:, :, None], 3, axis=2)
        image = np.repeat(image, height, axis=0)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self._count * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


class SyntheticAudio(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames of s16 stereo at 48 kHz."""

    kind = "audio"
    RATE = 48000
    SAMPLES = 960

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._count * 0.02 - time.monotonic()))
        offset = self._count * self.SAMPLES
        t = (np.arange(self.SAMPLES) + offset) / self.RATE
        tone = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
        samples = np.repeat(tone, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = self.RATE
        frame.pts = offset
        frame.time_base = fractions.Fraction(1, self.RATE)
        self._count += 1
        return frame


@dataclass
class Received:
    """Counts decoded frames of one remote track."""

    track: MediaStreamTrack
    frames: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.frames += 1
                if isinstance(frame, av.VideoFrame):
                    self.sizes.add((frame.width, frame.height))
        except MediaStreamError:
            pass


def headers(token: str, room_id: str, *, legacy: bool = False) -> dict[str, str]:
    return {"Token": token, ("RoomId" if legacy else "Room-Id"): room_id}


async def post(client: TestClient[Any, Any], path: str, token: str, room: str, body: Any) -> Any:
    response = await client.post(path, json=body, headers=headers(token, room))
    assert response.status == 200
    return await response.json()


@dataclass
class RtcClient:
    pc: RTCPeerConnection
    received: dict[str, Received] = field(default_factory=dict)  # by track id (= uri)
    reply: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        for received in self.received.values():
            if received.task is not None:
                received.task.cancel()
        await self.pc.close()
        tasks = [r.task for r in self.received.values() if r.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)


async def connect(
    client: TestClient[Any, Any],
    token: str,
    room: str,
    *,
    publish: list[MediaStreamTrack] | None = None,
    subscribe: list[tuple[str, str]] | None = None,  # (uri, kind)
    video_codec: str | None = None,  # offer only this video codec ("VP8", "H264")
) -> RtcClient:
    """One /exchange: publish `publish`, receive each `subscribe` on its own recvonly line."""
    pc = RTCPeerConnection(CONFIG)
    rtc = RtcClient(pc)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        received = Received(track)
        received.task = asyncio.ensure_future(received._run())
        rtc.received[track.id] = received

    for track in publish or []:
        pc.addTrack(track)
    for _, kind in subscribe or []:
        pc.addTransceiver(kind, direction="recvonly")
    if video_codec is not None:
        codecs = RTCRtpSender.getCapabilities("video").codecs
        only = [c for c in codecs if c.name in (video_codec, "rtx")]
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.setCodecPreferences(only)
    await pc.setLocalDescription(await pc.createOffer())
    body = {
        "sdp": {"type": "offer", "sdp": pc.localDescription.sdp},
        "subscribeList": [{"uri": uri} for uri, _ in subscribe or []],
    }
    rtc.reply = await post(client, "/exchange", token, room, body)
    if rtc.reply["resultCode"] != 10000:
        await pc.close()
        raise AssertionError(rtc.reply)
    answer = rtc.reply["sdp"]
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return rtc


async def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> None:
    """Poll `predicate()` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def open_peer_connections() -> list[RTCPeerConnection]:
    gc.collect()
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, RTCPeerConnection) and o.connectionState != "closed"
    ]


def gateway_tasks() -> set[asyncio.Task[Any]]:
    # aiohttp keeps one handler task per keep-alive connection of the test client: that is
    # the HTTP client's, not something an exchange started.
    return {
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") != "RequestHandler.start"
    }


def live_threads() -> set[threading.Thread]:
    # The loop's default executor keeps its idle workers (aiortc encodes there); they are
    # shared, not owned by a client, so they are not counted as leaks.
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}
