"""rtc2rtmp: pushing a room's resources to an RTMP URL, in its own thread (`RtmpPusher`).

Subscribed H.264 packets are remuxed as they are; other video and all audio frames are
encoded to H.264/AAC. PyAV muxes FLV in memory and `publish.RtmpPublisher` sends the tags.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.packet import Packet
from av.video.frame import VideoFrame

from livesignal.media.bitstream import h264_picture_size
from livesignal.media.rtmp.publish import FlvTagReader, RtmpError, RtmpPublisher
from livesignal.media.rtmp.worker import MS, Worker, redact_url
from livesignal.media.tracks import SubscriberTrack

log = logging.getLogger(__name__)

AAC_RATE = 44100


@dataclass(frozen=True, slots=True)
class _Item:
    kind: str
    media: VideoFrame | AudioFrame | Packet[Any]  # a Packet: H.264 to remux
    arrival: float

    @property
    def starts_video(self) -> bool:
        """Whether a video stream can start here: any frame, or an H.264 keyframe."""
        return self.kind == "video" and (
            not isinstance(self.media, Packet) or bool(self.media.is_keyframe)
        )


_STOP = object()


class RtmpPusher(Worker):
    """rtc2rtmp: muxes `tracks` (at most one video, one audio) into one FLV stream pushed to
    `url`; reconnects while running. H.264 packets are remuxed as they are; frames are
    encoded."""

    REMUXED_CODEC = "h264"  # what the subscribed tracks hand over as packets
    VIDEO_BITRATE = 1_000_000
    AUDIO_BITRATE = 64_000
    GOP_SECONDS = 2  # encoded; remuxed video asks its publisher for a keyframe as often

    def __init__(
        self,
        url: Callable[[], str],
        loop: asyncio.AbstractEventLoop,
        tracks: list[SubscriberTrack],
    ) -> None:
        super().__init__("push", redact_url(url()), loop)
        self._url = url  # asked again on every reconnect: a push signature may expire
        self.tracks = tracks
        self.has_video = any(t.kind == "video" for t in tracks)
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=300)
        self._pumps: list[asyncio.Task[None]] = []
        self._dropped = 0

    def start(self) -> None:
        super().start()
        self._pumps = [
            asyncio.ensure_future(self._pump(track), loop=self._loop) for track in self.tracks
        ]

    async def _pump(self, track: SubscriberTrack) -> None:
        last_keyframe = time.monotonic()
        broken = False  # a packet was dropped: later ones are undecodable until a keyframe
        try:
            while True:
                media = await track.recv()
                now = time.monotonic()
                if isinstance(media, Packet):
                    if media.is_keyframe:
                        last_keyframe, broken = now, False
                    elif broken or now - last_keyframe > self.GOP_SECONDS:
                        # RTMP players join at keyframes (nginx-rtmp `wait_key`), and a
                        # WebRTC publisher sends one only when asked.
                        track.request_keyframe()
                    if broken:
                        continue
                elif not isinstance(media, VideoFrame | AudioFrame):
                    continue
                try:
                    self._queue.put_nowait(_Item(track.kind, media, now))
                except queue.Full:
                    broken = broken or isinstance(media, Packet)
                    self._dropped += 1
                    if self._dropped % 100 == 1:
                        log.warning(
                            "push %s: muxer behind, dropped %d frames",
                            redact_url(self.url),
                            self._dropped,
                        )
        except MediaStreamError:
            pass

    def _request_keyframes(self) -> None:
        """From the push thread: ask the remuxed video's publisher for a keyframe."""
        for track in self.tracks:
            if track.kind == "video":
                self.call_soon(track.request_keyframe)

    def request_stop(self) -> None:
        super().request_stop()
        for pump in self._pumps:
            pump.cancel()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the thread checks `stopping` on every item as well

    async def stop(self, timeout: float = 5.0) -> bool:
        pumps = list(self._pumps)
        stopped = await super().stop(timeout)
        if pumps:
            await asyncio.gather(*pumps, return_exceptions=True)
        for track in self.tracks:
            track.stop()
        return stopped

    def run(self) -> None:
        while not self.stopping:
            try:
                self._push_once()
            except (av.FFmpegError, OSError, RtmpError, ValueError) as exc:
                log.warning("push %s: %s", redact_url(self.url), exc)
            if not self.stopping:
                self.sleep(1.0)

    def _next(self, timeout: float = 0.5) -> _Item | None:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _STOP:
            self._stop.set()
            return None
        assert isinstance(item, _Item)
        return item

    def _push_once(self) -> None:
        # The FLV header needs the picture size: wait for the first video frame (a keyframe,
        # when remuxing).
        first: _Item | None = None
        while first is None and not self.stopping:
            item = self._next()
            if item is None:
                continue
            if item.starts_video or not self.has_video:
                first = item
            elif item.kind == "video":
                self._request_keyframes()
        if first is None:
            return
        has_audio = any(t.kind == "audio" for t in self.tracks)
        session = _FlvSession(self._url(), first, self.has_video, has_audio)
        try:
            log.info("push %s: connected", redact_url(self.url))
            session.write(first)
            while not self.stopping:
                item = self._next()
                if item is not None:
                    session.write(item)
            session.flush()
        finally:
            session.close()


class _FlvSession:
    """One open FLV output with its encoders or remuxed H.264 (push thread only)."""

    def __init__(self, url: str, first: _Item, video: bool, audio: bool) -> None:
        self.t0 = first.arrival
        self.container: Any = None
        self.video: Any = None
        self.audio: Any = None
        self.size = (0, 0)
        self._last_video_pts = -1
        self._audio_pts: int | None = None
        self._resampler: AudioResampler | None = None
        self._parameter_sets: Any = None  # remuxing: puts the SPS/PPS where FLV wants them
        # PyAV muxes FLV into memory and RtmpPublisher sends the tags (see publish.py
        # for why PyAV does not open the RTMP URL itself).
        self.publisher = RtmpPublisher(url)
        self.publisher.open()
        try:
            self._open(first, video, audio)
        except BaseException:
            self.publisher.close()
            raise

    def _open(self, first: _Item, video: bool, audio: bool) -> None:
        self.container = av.open(
            FlvTagReader(self.publisher.send_tag),
            "w",
            format="flv",
            # no_duration_filesize: the output is not seekable, skip the header rewrite;
            # flush_packets: hand every tag over at once instead of filling a 32 KiB buffer;
            # a short interleave window so one silent track never holds the other back.
            container_options={
                "flvflags": "no_duration_filesize",
                "flush_packets": "1",
                "max_interleave_delta": "500000",
            },
        )
        if video and isinstance(first.media, Packet):
            self._open_remux(first.media)
        elif video:
            frame = first.media
            assert isinstance(frame, VideoFrame)
            self.size = (frame.width - frame.width % 2, frame.height - frame.height % 2)
            stream = self.container.add_stream("libx264", rate=30)
            stream.width, stream.height = self.size
            stream.pix_fmt = "yuv420p"
            stream.bit_rate = RtmpPusher.VIDEO_BITRATE
            stream.time_base = MS
            ctx = stream.codec_context
            ctx.time_base = MS
            ctx.gop_size = 30 * RtmpPusher.GOP_SECONDS
            ctx.max_b_frames = 0
            ctx.options = {"preset": "veryfast", "tune": "zerolatency", "profile": "main"}
            self.video = stream
        if audio:
            audio_stream = self.container.add_stream("aac", rate=AAC_RATE)
            audio_stream.layout = "stereo"
            audio_stream.bit_rate = RtmpPusher.AUDIO_BITRATE
            self.audio = audio_stream
            self._resampler = AudioResampler(
                format="fltp", layout="stereo", rate=AAC_RATE, frame_size=1024
            )

    def _open_remux(self, keyframe: Packet[Any]) -> None:
        """An H.264 stream without a codec context: the packets go into FLV untouched.

        FLV wants the SPS/PPS once, in its AVC sequence header, and length-prefixed NAL
        units; forwarded H.264 is Annex B with the SPS/PPS in each keyframe. The
        `extract_extradata` filter hands the first SPS/PPS to the muxer as new extradata,
        which makes FFmpeg's FLV muxer write the sequence header and convert each packet.
        """
        self.size = h264_picture_size(bytes(keyframe)) or (0, 0)
        stream = self.container.add_mux_stream("h264", width=self.size[0], height=self.size[1])
        stream.time_base = MS
        self._parameter_sets = av.bitstream.BitStreamFilterContext("extract_extradata", stream)
        self.video = stream

    def write(self, item: _Item) -> None:
        if item.kind == "video" and self.video is not None:
            self._write_video(item)
        elif item.kind == "audio" and self.audio is not None:
            self._write_audio(item)

    def _video_pts(self, arrival: float) -> int:
        pts = max(int((arrival - self.t0) * 1000), self._last_video_pts + 1)
        self._last_video_pts = pts
        return pts

    def _write_video(self, item: _Item) -> None:
        shared = item.media
        if isinstance(shared, Packet):
            self._remux_video(shared, item.arrival)
            return
        assert isinstance(shared, VideoFrame) and self._parameter_sets is None
        # MediaRelay hands the same frame object to every subscriber's encoder: work on a
        # private copy so that setting pts here cannot race with their timestamps.
        if (shared.width, shared.height) == self.size and shared.format.name == "yuv420p":
            frame = VideoFrame.from_ndarray(shared.to_ndarray(), format="yuv420p")
        else:
            frame = shared.reformat(width=self.size[0], height=self.size[1], format="yuv420p")
        frame.pts = self._video_pts(item.arrival)
        frame.time_base = MS
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in self.video.encode(frame):
            self.container.mux(packet)

    def _remux_video(self, shared: Packet[Any], arrival: float) -> None:
        if self._parameter_sets is None:
            return  # an encoding session (cannot happen: one resource, one kind of media)
        # Every forwarding subscriber's sender reads the same packet on the event loop: mux
        # a private copy so that its timestamps here cannot race with theirs.
        packet = Packet(bytes(shared))
        packet.pts = packet.dts = self._video_pts(arrival)
        packet.time_base = MS
        packet.is_keyframe = bool(shared.is_keyframe)
        packet.stream = self.video
        for out in self._parameter_sets.filter(packet):
            out.stream = self.video
            self.container.mux(out)

    def _write_audio(self, item: _Item) -> None:
        shared = item.media
        assert isinstance(shared, AudioFrame) and self._resampler is not None
        wall = int((item.arrival - self.t0) * shared.sample_rate)
        if wall < 0:
            return  # older than the stream start
        frame = AudioFrame.from_ndarray(
            shared.to_ndarray(), format=shared.format.name, layout=shared.layout.name
        )  # a private copy, as for video
        frame.sample_rate = shared.sample_rate
        # Count samples for a gapless track; jump ahead to the wall clock after a stall
        # (never back: FLV timestamps must not decrease).
        if self._audio_pts is None or wall - self._audio_pts > shared.sample_rate // 2:
            self._audio_pts = wall
        frame.pts = self._audio_pts
        frame.time_base = fractions.Fraction(1, frame.sample_rate)
        self._audio_pts += frame.samples
        for out in self._resampler.resample(frame):
            for packet in self.audio.encode(out):
                self.container.mux(packet)

    def flush(self) -> None:
        for stream in (self.video, self.audio):
            if stream is not None and stream.codec_context is not None:  # encoders only
                for packet in stream.encode(None):
                    self.container.mux(packet)

    def close(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, OSError, RtmpError) as exc:
            log.debug("closing FLV output: %s", exc)
        finally:
            self.publisher.close()
