"""rtmp2rtc: pulling an RTMP stream into a room, in its own thread (`RtmpPuller`).

It demuxes the RTMP (FLV) stream with PyAV. H.264 passes through untouched apart from
`h264_mp4toannexb` (FLV carries AVCC, RTP packetization wants Annex B start codes), so
aiortc's H.264 encoder only packetizes it; AAC is decoded to s16/48 kHz for aiortc's Opus
encoder.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections.abc import Callable
from typing import Any

import av
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.packet import Packet

from livesignal.media.census import CENSUS
from livesignal.media.feed import FeedTrack
from livesignal.media.rtmp.worker import MS, Worker, redact_url

log = logging.getLogger(__name__)

OPUS_RATE = 48000


class RtmpPuller(Worker):
    """rtmp2rtc: feeds `video` (Annex B H.264 packets) and `audio` (s16 frames) from `url`.

    It reconnects while running: the publisher may not have started yet, or may restart.
    """

    def __init__(
        self,
        url: str,
        loop: asyncio.AbstractEventLoop,
        *,
        video: FeedTrack | None,
        audio: FeedTrack | None,
        open_timeout: float = 3.0,
        read_timeout: float = 3.0,
        on_source: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__("pull", url, loop)
        self._video = video
        self._audio = audio
        # Called on the event loop with True when the source comes (back), False when it stops.
        self._on_source = on_source
        self._source_live = False
        self._timeouts = (open_timeout, read_timeout)
        self._video_offset: int | None = None
        self._last_video_pts = 0
        self._audio_samples = 0

    def run(self) -> None:
        backoff = 0.2
        while not self.stopping:
            try:
                self._pull_once()
                backoff = 0.2
            except (av.FFmpegError, OSError) as exc:
                log.debug("pull %s: %s", redact_url(self.url), exc)
            if self.stopping:
                break
            self.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _pull_once(self) -> None:
        container = av.open(
            self.url,
            timeout=self._timeouts,
            # Live input: start as soon as both streams are known instead of probing 5 s.
            options={"analyzeduration": "1000000", "fflags": "nobuffer"},
        )
        try:
            self._demux(container)
        finally:
            container.close()
            self._report_source(False)

    def _report_source(self, live: bool) -> None:
        if live != self._source_live:
            self._source_live = live
            if self._on_source is not None:
                self.call_soon(self._on_source, live)

    def _demux(self, container: Any) -> None:
        video_stream = next(
            (s for s in container.streams.video if s.codec_context.name == "h264"), None
        )
        audio_stream = next(iter(container.streams.audio), None)
        if self._video is None:
            video_stream = None
        if self._audio is None:
            audio_stream = None
        if container.streams.video and video_stream is None and self._video is not None:
            log.warning("pull %s: video is not H.264, not relayed", redact_url(self.url))
        streams = [s for s in (video_stream, audio_stream) if s is not None]
        if not streams:
            raise av.FFmpegError(0, "no usable stream")
        bsf = (
            av.bitstream.BitStreamFilterContext("h264_mp4toannexb", video_stream)
            if video_stream is not None
            else None
        )
        resampler = AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE)
        if audio_stream is not None:
            CENSUS.decoder_started("aac")
        log.info("pull %s: connected", redact_url(self.url))
        self._report_source(True)
        if self._video is not None:
            self.call_soon(self._video.restart_at_keyframe)
        self._video_offset = None
        for packet in container.demux(streams):
            if self.stopping:
                return
            if packet.pts is None or packet.size == 0:
                continue
            if packet.stream is video_stream and bsf is not None:
                for out in bsf.filter(packet):
                    self._feed_video(out, video_stream.time_base)
            elif packet.stream is audio_stream:
                for frame in audio_stream.codec_context.decode(packet):
                    for out_frame in resampler.resample(frame):
                        self._feed_audio(out_frame)
        log.info("pull %s: stream ended", redact_url(self.url))

    def _feed_video(self, packet: Packet[Any], time_base: fractions.Fraction) -> None:
        assert self._video is not None and packet.pts is not None
        if time_base != MS:
            packet.pts = int(packet.pts * time_base / MS)
            packet.dts = packet.pts
        if self._video_offset is None:
            # A reconnect restarts the source's clock; keep the relayed one monotonic.
            start = self._last_video_pts + 40 if self._last_video_pts else 0
            self._video_offset = start - packet.pts
        packet.pts = packet.pts + self._video_offset
        packet.dts = packet.pts
        packet.time_base = MS
        self._last_video_pts = packet.pts
        self.call_soon(self._video.feed, packet)

    def _feed_audio(self, frame: AudioFrame) -> None:
        assert self._audio is not None
        frame.pts = self._audio_samples
        frame.time_base = fractions.Fraction(1, OPUS_RATE)
        self._audio_samples += frame.samples
        self.call_soon(self._audio.feed, frame)
