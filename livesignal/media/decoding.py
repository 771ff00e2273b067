"""Decoding an encoded resource once, for every consumer that needs frames.

Subscribers that take the publisher's codec get its packets as they are. A consumer that
cannot (a subscriber whose negotiated codec differs, an rtc2rtmp push of VP8 video or of
Opus audio) takes frames from the resource's one `SharedDecoder`, which exists only while
such a consumer is attached: a resource nobody transcodes is never decoded.

Decoding can run slower than real time (a busy machine, a large picture). The decoder then
does not fall further and further behind: packets wait in a `DecodeBacklog` of at most
`MAX_DECODE_BACKLOG`, which skips ahead to the next keyframe when full, asking the publisher
for one when it can, since a video packet without the ones before it is undecodable.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import weakref
from typing import Any

import av
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.codeccontext import AudioCodecContext
from av.codec.context import CodecContext
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext

from livesignal.media.backlog import KeyframeBacklog
from livesignal.media.census import CENSUS
from livesignal.media.feed import FeedTrack, catch_up

log = logging.getLogger(__name__)

OPUS_RATE = 48000
# Packets waiting for a shared decoder: about 2 s of video at 30 fps, 1.2 s of 20 ms audio.
MAX_DECODE_BACKLOG = 60

_decoders: weakref.WeakKeyDictionary[FeedTrack, SharedDecoder] = weakref.WeakKeyDictionary()


def shared_decoder(source: FeedTrack, relay: MediaRelay) -> SharedDecoder:
    """The decoder of the encoded `source` that frame consumers share (made on first use)."""
    decoder = _decoders.get(source)
    if decoder is None or decoder.finished:
        decoder = _decoders[source] = SharedDecoder(source, relay)
    return decoder


Decoder = AudioCodecContext | VideoCodecContext


def open_decoder(codec: str) -> Decoder:
    """A PyAV decoder for an RTP codec name, with the frame format aiortc's encoders take."""
    if codec == "vp8":
        return CodecContext.create("vp8", "r")
    if codec == "h264":
        return CodecContext.create("h264", "r")
    if codec == "opus":
        # aiortc's Opus encoder (and the AAC resampler of rtc2rtmp) take s16 stereo 48 kHz.
        context = CodecContext.create("libopus", "r")
        context.format = "s16"
        context.layout = "stereo"
        context.sample_rate = OPUS_RATE
        return context
    raise ValueError(f"no decoder for {codec!r}")


class SharedDecoder:
    """Decodes `source` into `frames` while at least one consumer holds it."""

    def __init__(self, source: FeedTrack, relay: MediaRelay) -> None:
        assert source.codec is not None
        self.source = source
        self.codec = source.codec
        self.frames = FeedTrack(source.kind)
        self._relay = relay
        self._users = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.frames.readyState != "live"

    def acquire(self) -> FeedTrack:
        """Start (or join) decoding; the track of decoded frames. Pair with `release()`."""
        self._users += 1
        if self._task is None:
            proxy = self._relay.subscribe(self.source, buffered=True)
            self._task = asyncio.create_task(
                self._run(proxy), name=f"livesignal-media-decode-{self.source.id}"
            )
        return self.frames

    def release(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        # The last consumer left: stop decoding. The next one starts a new decoder at the
        # next keyframe, rather than this one decoding for nobody.
        if self._task is not None:
            self._task.cancel()
        self.frames.stop()
        if _decoders.get(self.source) is self:
            del _decoders[self.source]

    async def _run(self, proxy: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        backlog = DecodeBacklog(self.source)
        # The relay's proxy queues without limit: move its packets into the bounded backlog
        # as they come, whatever the decoder is doing.
        reader = asyncio.create_task(
            _read(proxy, self.source, backlog),
            name=f"livesignal-media-decode-read-{self.source.id}",
        )
        decoder: Decoder | None = None
        if not self.source.gop_snapshot():
            self.source.request_keyframe()
        try:
            while True:
                packets = await backlog.take()
                if decoder is None:
                    decoder = open_decoder(self.codec)
                    CENSUS.decoder_started(self.codec)
                frames, failed = await loop.run_in_executor(None, _decode, decoder, packets)
                if failed:
                    self.source.request_keyframe()  # the picture is broken until the next one
                for frame in frames:
                    self.frames.feed(frame)
        except MediaStreamError:
            pass  # the resource was withdrawn
        finally:
            reader.cancel()
            proxy.stop()
            self.frames.stop()


async def _read(proxy: MediaStreamTrack, source: FeedTrack, backlog: DecodeBacklog) -> None:
    """Move packets from the relay `proxy` into `backlog`, starting at a keyframe."""
    primed = False
    try:
        while True:
            item = await proxy.recv()
            if not isinstance(item, Packet):
                continue
            packets: list[Packet[Any]] = [item]
            if not primed:
                caught_up = catch_up(source, item)
                if caught_up is None:
                    source.request_keyframe()
                    continue  # a decoder can only start at a keyframe
                packets = [p for p in caught_up if isinstance(p, Packet)]
                primed = True
            for packet in packets:
                backlog.put(packet)
    except MediaStreamError:
        pass
    finally:
        backlog.close()


class DecodeBacklog(KeyframeBacklog["Packet[Any]"]):
    """The packets a decoder has yet to decode: at most `limit` (`MAX_DECODE_BACKLOG`), in a
    decodable order, asking `source` for a keyframe when it has to wait for one."""

    def __init__(self, source: FeedTrack, limit: int | None = None) -> None:
        super().__init__(
            source.kind,
            MAX_DECODE_BACKLOG if limit is None else limit,
            source.request_keyframe,
            f"decoder of {source.id}",
        )


def _decode(decoder: Decoder, packets: list[Packet[Any]]) -> tuple[list[Any], bool]:
    """Decode `packets` (runs in an executor); the frames, and whether any packet failed."""
    frames: list[Any] = []
    failed = False
    for packet in packets:
        try:
            decoded = decoder.decode(packet)
        except av.FFmpegError as exc:
            log.debug("dropping undecodable packet: %s", exc)
            failed = True
            continue
        for frame in decoded:
            if frame.pts is None:
                frame.pts = packet.pts
            if frame.time_base is None:
                frame.time_base = packet.time_base or fractions.Fraction(1, 1000)
            frames.append(frame)
    return frames, failed
