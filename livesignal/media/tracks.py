"""`SubscriberTrack`: what a subscriber's RTCRtpSender (or an rtc2rtmp push) reads.

Its source resource can be attached, swapped and detached while the sender keeps running:
aiortc's sender stops for good when its track raises MediaStreamError, so a withdrawn
resource must not end it.

It forwards the source's packets as they are when its consumer takes the source's codec
(`codec`): aiortc's sender then only packetizes them (`Encoder.pack`), nothing is decoded or
encoded. Otherwise it hands out frames, decoded once per resource by a `SharedDecoder` when
the source is encoded, and its consumer encodes them.

What waits for the consumer is a bounded `KeyframeBacklog`: a subscriber that falls behind
loses whole GOPs, never single packets, so what it receives always resumes at a keyframe
(and the publisher is asked for one when none is queued).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame

from livesignal.media.backlog import KeyframeBacklog
from livesignal.media.census import CENSUS
from livesignal.media.decoding import SharedDecoder, shared_decoder
from livesignal.media.feed import FeedTrack, catch_up

if TYPE_CHECKING:
    from livesignal.media.feed import Media

__all__ = ["FeedTrack", "SubscriberTrack"]

log = logging.getLogger(__name__)

# Items waiting for one consumer. Its sender or push pump reads as fast as the event loop
# runs, so only a stalled consumer gets near this: about 10 s of 30 fps video or 6 s of
# 20 ms audio. It still holds a late joiner's cached GOP of x264's default length (250
# frames), which arrives all at once; a longer one makes that joiner wait for the next.
MAX_SUBSCRIBER_BACKLOG = 300


class SubscriberTrack(MediaStreamTrack):
    """A track whose source resource can be attached and detached at any time.

    While nothing is attached, or after the attached source ended, `recv()` simply waits.
    Forwarding starts with the first `recv()`: a sender that is not connected yet must not
    find a backlog of stale media when it starts.
    """

    def __init__(self, kind: str, relay: MediaRelay, *, codec: str | None) -> None:
        super().__init__()
        self.kind = kind
        self.uri = ""
        # The codec whose packets the consumer sends as they are (an RTCRtpSender's
        # negotiated codec); None for a consumer that takes frames only.
        self.codec = codec.lower() if codec else None
        self._relay = relay
        self._backlog: KeyframeBacklog[Media] = KeyframeBacklog(
            kind, MAX_SUBSCRIBER_BACKLOG, self.request_keyframe, "subscriber"
        )
        self._latest_only = False
        self._source: FeedTrack | None = None
        self._decoder: SharedDecoder | None = None
        self._consuming = False
        self._forwarder: asyncio.Task[None] | None = None
        self._encoder_counted = False

    @property
    def forwards_packets(self) -> bool:
        """Whether the attached source's packets reach the consumer untouched."""
        source = self._source
        return source is not None and source.encoded and source.codec == self.codec

    @property
    def queued(self) -> int:
        """How many items wait for the consumer (at most `MAX_SUBSCRIBER_BACKLOG`)."""
        return len(self._backlog)

    def attach(self, uri: str, source: FeedTrack) -> None:
        self.detach()
        self.uri = uri
        self._id = uri  # aiortc puts the track id into the answer's a=msid
        self._source = source
        self._backlog.name = f"subscriber of {uri}"
        if self._consuming:
            self._start_forwarding()

    def _start_forwarding(self) -> None:
        source = self._source
        if source is None or self._forwarder is not None:
            return
        if self.forwards_packets:
            # Packets are dropped only by whole GOPs: every one after the keyframe is a
            # reference.
            self._latest_only = False
            proxy = self._relay.subscribe(source, buffered=True)
            if not source.gop_snapshot():
                source.request_keyframe()  # a late joiner must not wait for the next GOP
            self._forwarder = asyncio.create_task(
                self._forward(proxy, source), name=f"livesignal-media-forward-{self.uri}"
            )
            return
        frames = source
        if source.encoded:
            self._decoder = shared_decoder(source, self._relay)
            frames = self._decoder.acquire()
        # Decoded video is taken latest-frame-only so a slow encoder never builds latency;
        # audio must not be dropped.
        self._latest_only = source.kind == "video"
        proxy = self._relay.subscribe(frames, buffered=not self._latest_only)
        self._forwarder = asyncio.create_task(
            self._forward(proxy, None), name=f"livesignal-media-forward-{self.uri}"
        )

    def detach(self) -> None:
        if self._forwarder is not None:
            self._forwarder.cancel()
            self._forwarder = None
        if self._decoder is not None:
            self._decoder.release()
            self._decoder = None
        self._source = None
        self.uri = ""
        self._backlog.clear()  # what is left belongs to the old source

    def request_keyframe(self) -> None:
        """The consumer lost pictures (the subscriber sent PLI or FIR).

        Forwarded packets come from the publisher, so the request goes on to it. Frames are
        encoded by the consumer itself, which already makes its next frame a keyframe.
        """
        if self._source is not None and self.forwards_packets:
            self._source.request_keyframe()

    async def _forward(self, proxy: MediaStreamTrack, packets_of: FeedTrack | None) -> None:
        """Move items from `proxy` into the queue; `packets_of` starts them at a keyframe."""
        try:
            while True:
                item = await proxy.recv()
                items = [item]
                if packets_of is not None:
                    caught_up = catch_up(packets_of, item)
                    if caught_up is None:
                        packets_of.request_keyframe()
                        continue  # joined mid-GOP: undecodable until the next keyframe
                    items, packets_of = caught_up, None
                for one in items:
                    self._put(one)
        except MediaStreamError:
            pass  # the resource was withdrawn; stay idle so the sender survives
        finally:
            proxy.stop()

    def _put(self, item: Media) -> None:
        if self._latest_only:
            self._backlog.clear()
        self._backlog.put(item)

    async def recv(self) -> Media:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._consuming:
            self._consuming = True
            self._start_forwarding()
        item = await self._backlog.get()  # MediaStreamError once stopped
        if isinstance(item, Frame) and not self._encoder_counted:
            self._encoder_counted = True  # a consumer given frames encodes them
            CENSUS.encoder_started(self.kind)
        return item

    def stop(self) -> None:
        self.detach()
        self._backlog.close()
        super().stop()
