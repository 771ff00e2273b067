"""The two track types the gateway moves media through.

`FeedTrack` is the source of every published resource: a WebRTC publisher's received track
is pumped into one, and the RTMP puller feeds one from its thread. MediaRelay fans a
FeedTrack out to subscribers.

`SubscriberTrack` is what a subscriber's RTCRtpSender (or an rtc2rtmp push) reads. Its source
can be attached, swapped and detached while the sender keeps running: aiortc's sender stops
for good when its track raises MediaStreamError, so a withdrawn resource must not end it.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from typing import TYPE_CHECKING, Any, TypeAlias

import av
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from av.packet import Packet
from av.video.codeccontext import VideoCodecContext

if TYPE_CHECKING:
    from collections.abc import Iterable

    # Packet is generic only in PyAV's stubs, so the alias exists for the type checker only.
    Media: TypeAlias = Frame | Packet[Any]

logger = logging.getLogger(__name__)

# A GOP longer than this (about 20 s at 30 fps) is not cached: late joiners wait for the
# next keyframe instead of the gateway holding unbounded memory.
MAX_GOP_PACKETS = 600
# A consumer this far behind is broken; dropping is better than growing without bound.
MAX_BACKLOG = 500


def is_keyframe(item: Media) -> bool:
    return isinstance(item, Packet) and bool(item.is_keyframe)


class FeedTrack(MediaStreamTrack):
    """A live source fed by `feed()`; keeps the current GOP when it carries encoded video."""

    def __init__(self, kind: str, *, encoded: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.encoded = encoded
        self._queue: asyncio.Queue[Media | None] = asyncio.Queue()
        self._gop: list[Packet[Any]] = []
        self._waiting_for_keyframe = encoded
        self._dropped = 0

    def feed(self, item: Media) -> None:
        """Queue one frame or packet (event-loop thread only)."""
        if self.readyState != "live":
            return
        if self._waiting_for_keyframe:
            if not is_keyframe(item):
                return  # undecodable without the keyframe it depends on
            self._waiting_for_keyframe = False
        if self._queue.qsize() >= MAX_BACKLOG:
            self._queue.get_nowait()
            self._dropped += 1
            if self._dropped % 100 == 1:
                logger.warning("feed %s: consumer is behind, dropped %d", self.id, self._dropped)
            if self.encoded:
                self._waiting_for_keyframe = True
        self._queue.put_nowait(item)

    def restart_at_keyframe(self) -> None:
        """After a source reconnect: drop packets until the next keyframe."""
        if self.encoded:
            self._waiting_for_keyframe = True

    def gop_snapshot(self) -> list[Packet[Any]]:
        """The packets relayed since the last keyframe, that keyframe first."""
        return list(self._gop)

    async def recv(self) -> Media:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        # Cache at recv time: MediaRelay hands this item to every proxy in the same
        # synchronous step, which is what makes SubscriberTrack's priming race-free.
        if self.encoded and isinstance(item, Packet):
            if item.is_keyframe:
                self._gop = [item]
            elif self._gop and len(self._gop) < MAX_GOP_PACKETS:
                self._gop.append(item)
            else:
                self._gop = []
        return item

    def stop(self) -> None:
        if self.readyState == "live":
            self._queue.put_nowait(None)  # wakes a pending recv()
        self._gop = []
        super().stop()


class SubscriberTrack(MediaStreamTrack):
    """A track whose source resource can be attached and detached at any time.

    While nothing is attached, or after the attached source ended, `recv()` simply waits.
    Forwarding starts with the first `recv()`: a sender that is not connected yet must not
    find a backlog of stale media when it starts.
    """

    def __init__(self, kind: str, relay: MediaRelay, *, accept_packets: bool) -> None:
        super().__init__()
        self.kind = kind
        self.uri = ""
        self.accept_packets = accept_packets
        self._relay = relay
        self._queue: asyncio.Queue[Media | None] = asyncio.Queue()
        self._latest_only = False
        self._source: FeedTrack | None = None
        self._consuming = False
        self._forwarder: asyncio.Task[None] | None = None

    def attach(self, uri: str, source: FeedTrack) -> None:
        self.detach()
        self.uri = uri
        self._id = uri  # aiortc puts the track id into the answer's a=msid
        self._source = source
        if self._consuming:
            self._start_forwarding()

    def _start_forwarding(self) -> None:
        source = self._source
        if source is None or self._forwarder is not None:
            return
        decode = source.encoded and not self.accept_packets
        # Decoded video is taken latest-frame-only so a slow encoder never builds latency;
        # packets and audio must not be dropped.
        self._latest_only = source.kind == "video" and not source.encoded
        proxy = self._relay.subscribe(source, buffered=not self._latest_only)
        self._forwarder = asyncio.create_task(
            self._forward(proxy, source, decode), name=f"livesignal-media-forward-{self.uri}"
        )

    def detach(self) -> None:
        if self._forwarder is not None:
            self._forwarder.cancel()
            self._forwarder = None
        self._source = None
        self.uri = ""
        while not self._queue.empty():  # what is left belongs to the old source
            self._queue.get_nowait()

    async def _forward(self, proxy: MediaStreamTrack, source: FeedTrack, decode: bool) -> None:
        decoder = av.CodecContext.create("h264", "r") if decode else None
        loop = asyncio.get_running_loop()
        primed = not source.encoded
        try:
            while True:
                item = await proxy.recv()
                items: Iterable[Media] = [item]
                if not primed:
                    primed_items = _prime(source, item)
                    if primed_items is None:
                        continue  # joined mid-GOP with no cache: wait for a keyframe
                    items = primed_items
                    primed = True
                if decoder is not None:
                    packets = [p for p in items if isinstance(p, Packet)]
                    items = await loop.run_in_executor(None, _decode, decoder, packets)
                for one in items:
                    self._put(one)
        except MediaStreamError:
            pass  # the resource was withdrawn; stay idle so the sender survives
        finally:
            proxy.stop()

    def _put(self, item: Media) -> None:
        if self._latest_only:
            while not self._queue.empty():
                self._queue.get_nowait()
        elif self._queue.qsize() >= MAX_BACKLOG:
            self._queue.get_nowait()
        self._queue.put_nowait(item)

    async def recv(self) -> Media:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._consuming:
            self._consuming = True
            self._start_forwarding()
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        return item

    def stop(self) -> None:
        self.detach()
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()


def _prime(source: FeedTrack, first: Media) -> list[Media] | None:
    """The GOP-cache prefix for a new subscriber whose first live item is `first`.

    The proxy was registered before `first` was relayed, so every cached packet before
    `first` was missed and every one after it is still coming through the proxy.
    """
    cache = source.gop_snapshot()
    for index, cached in enumerate(cache):
        if cached is first:
            return [*cache[:index], first]
    if is_keyframe(first):
        return [first]
    return None


def _decode(decoder: VideoCodecContext, packets: list[Packet[Any]]) -> list[Media]:
    """Decode pass-through H.264 for a consumer that needs frames (runs in an executor)."""
    frames: list[Media] = []
    for packet in packets:
        try:
            decoded = decoder.decode(packet)
        except av.FFmpegError as exc:
            logger.debug("dropping undecodable packet: %s", exc)
            continue
        for frame in decoded:
            if frame.pts is None:
                frame.pts = packet.pts
            if frame.time_base is None:
                frame.time_base = packet.time_base or fractions.Fraction(1, 1000)
            frames.append(frame)
    return frames
