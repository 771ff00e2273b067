"""RTMP <-> WebRTC media work with PyAV, each stream in its own thread.

rtmp2rtc (`RtmpPuller`): demux an RTMP (FLV) stream; H.264 passes through untouched apart
from `h264_mp4toannexb` (FLV carries AVCC, RTP packetization wants Annex B start codes), so
aiortc's H.264 encoder only packetizes it; AAC is decoded to s16/48 kHz for aiortc's Opus
encoder. rtc2rtmp (`RtmpPusher`): remux subscribed H.264 packets as they are, encode other
video and all audio frames to H.264/AAC, mux FLV in memory and publish the tags with
`rtmp_publish.RtmpPublisher`. Everything blocking (network I/O, decode, encode) runs in the
thread; the event loop only moves frames and packets in and out.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import logging
import queue
import threading
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
from livesignal.media.census import CENSUS
from livesignal.media.feed import FeedTrack
from livesignal.media.rtmp.publish import FlvTagReader, RtmpError, RtmpPublisher
from livesignal.media.tracks import SubscriberTrack

logger = logging.getLogger(__name__)

THREAD_PREFIX = "livesignal-media"
OPUS_RATE = 48000
AAC_RATE = 44100
MS = fractions.Fraction(1, 1000)
_ids = itertools.count(1)


def media_threads() -> list[threading.Thread]:
    """Threads this module started and that are still running (for tests and monitoring)."""
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def redact(url: str) -> str:
    """A URL fit for logs: its query (push signatures) removed."""
    return url.split("?", 1)[0]


class _Worker:
    """A named daemon thread whose end the event loop can await."""

    def __init__(self, kind: str, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self._loop = loop
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._done: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, name=f"{THREAD_PREFIX}-{kind}-{next(_ids)}", daemon=True
        )

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        try:
            self.run()
        except Exception:
            logger.exception("%s for %s crashed", self._thread.name, redact(self.url))
        finally:
            self.call_soon(self._finished)

    def _finished(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def run(self) -> None:
        raise NotImplementedError

    def call_soon(self, callback: Any, *args: Any) -> bool:
        """Run `callback(*args)` on the event loop; False once the loop is gone."""
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            self._stop.set()
            return False
        return True

    def sleep(self, seconds: float) -> None:
        """Wait between retries; `kick()` or `stop()` end the wait early."""
        self._wake.wait(seconds)
        self._wake.clear()

    def kick(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to end and wait for it; False if it is still blocked after timeout."""
        self.request_stop()
        if not self._thread.is_alive() and not self._thread.ident:
            return True  # never started
        deadline = self._loop.time() + timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
            # `_done` is set from the thread's last statement; wait out its actual exit.
            while self._thread.is_alive() and self._loop.time() < deadline:
                await asyncio.sleep(0.001)
        except TimeoutError:
            pass
        if self._thread.is_alive():
            logger.warning("%s did not stop within %.1fs", self._thread.name, timeout)
            return False
        return True


class RtmpPuller(_Worker):
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
                logger.debug("pull %s: %s", redact(self.url), exc)
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
            logger.warning("pull %s: video is not H.264, not relayed", redact(self.url))
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
        logger.info("pull %s: connected", redact(self.url))
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
        logger.info("pull %s: stream ended", redact(self.url))

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


class RtmpPusher(_Worker):
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
        super().__init__("push", redact(url()), loop)
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
                        logger.warning(
                            "push %s: muxer behind, dropped %d frames",
                            redact(self.url),
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
                logger.warning("push %s: %s", redact(self.url), exc)
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
            logger.info("push %s: connected", redact(self.url))
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
        # PyAV muxes FLV into memory and RtmpPublisher sends the tags (see rtmp_publish.py
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
            logger.debug("closing FLV output: %s", exc)
        finally:
            self.publisher.close()
