"""`FeedTrack`: the source of every published resource.

A WebRTC publisher's encoded frames are tapped into one (`aiortc_taps`), the RTMP puller
feeds one from its thread, and a shared decoder feeds one with the frames it decodes.
MediaRelay fans a FeedTrack out to its consumers.

An encoded feed (`codec` set) carries PyAV packets of that codec. A consumer that joins
mid-stream needs a keyframe first: a feed whose publisher can be asked for one (a WebRTC
publisher: RTCP PLI) is asked; one that cannot (an RTMP pull) keeps the current GOP instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

if TYPE_CHECKING:
    # Packet is generic only in PyAV's stubs, so the alias exists for the type checker only.
    Media: TypeAlias = Frame | Packet[Any]

log = logging.getLogger(__name__)

# A GOP longer than this (about 20 s at 30 fps) is not cached: late joiners wait for the
# next keyframe instead of the gateway holding unbounded memory.
MAX_GOP_PACKETS = 600
# A consumer this far behind is broken; dropping is better than growing without bound.
MAX_BACKLOG = 500
# Keyframe requests closer together than this are one request: consumers joining together
# all wait for the same keyframe, and a publisher must not be flooded with PLIs.
KEYFRAME_REQUEST_INTERVAL = 0.3


def is_keyframe(item: Media) -> bool:
    return isinstance(item, Packet) and bool(item.is_keyframe)


class FeedTrack(MediaStreamTrack):
    """A live source fed by `feed()`: frames, or packets of `codec` (lower case)."""

    def __init__(self, kind: str, *, codec: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.codec = codec.lower() if codec else None
        # Asks the publisher for a keyframe (set by whoever feeds this track, if it can).
        self.on_keyframe_request: Callable[[], None] | None = None
        self._last_keyframe_request = -KEYFRAME_REQUEST_INTERVAL
        self._queue: asyncio.Queue[Media | None] = asyncio.Queue()
        self._gop: list[Packet[Any]] = []
        self._waiting_for_keyframe = self.encoded
        self._dropped = 0

    @property
    def encoded(self) -> bool:
        return self.codec is not None

    @property
    def keyframes_on_request(self) -> bool:
        return self.on_keyframe_request is not None

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe soon (no-op when it cannot be asked)."""
        if self.on_keyframe_request is None or self.readyState != "live":
            return
        now = time.monotonic()
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        self._last_keyframe_request = now
        self.on_keyframe_request()

    def feed(self, item: Media) -> None:
        """Queue one frame or packet (event-loop thread only)."""
        if self.readyState != "live":
            return
        if self._waiting_for_keyframe:
            if not is_keyframe(item):
                self.request_keyframe()
                return  # undecodable without the keyframe it depends on
            self._waiting_for_keyframe = False
        if self._queue.qsize() >= MAX_BACKLOG:
            self._queue.get_nowait()
            self._dropped += 1
            if self._dropped % 100 == 1:
                log.warning("feed %s: consumer is behind, dropped %d", self.id, self._dropped)
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
        # A publisher that makes keyframes on request needs no cache.
        if self.encoded and not self.keyframes_on_request and isinstance(item, Packet):
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
        self.on_keyframe_request = None
        super().stop()


def catch_up(source: FeedTrack, first: Media) -> list[Media] | None:
    """What a consumer joining an encoded feed at `first` must take first; None: wait.

    The consumer's relay proxy was registered before `first` was relayed, so every cached
    packet before `first` was missed and every one after it is still coming through the
    proxy. Without a cache, only a keyframe is a place to start.
    """
    cache = source.gop_snapshot()
    for index, cached in enumerate(cache):
        if cached is first:
            return [*cache[:index], first]
    if is_keyframe(first):
        return [first]
    return None
