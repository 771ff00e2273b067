"""`KeyframeBacklog`: a bounded queue of media that stays decodable when it overflows.

Whatever waits for a slow consumer (a shared decoder, a subscriber's sender) must not grow
without bound, but encoded video cannot simply lose its oldest packet: every packet after a
keyframe refers to the ones before it, so the picture stays broken until the next keyframe.
A full backlog therefore skips ahead to the next queued keyframe; with none queued it drops
everything, waits for the next keyframe and asks the publisher for one. Audio packets and
decoded frames each stand alone, so for them this is simply "drop the oldest".
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from aiortc.mediastreams import MediaStreamError
from av.packet import Packet

if TYPE_CHECKING:
    from livesignal.media.feed import Media

log = logging.getLogger(__name__)

MediaT = TypeVar("MediaT", bound="Media")


def starts_decoding(kind: str, item: Media) -> bool:
    """Whether a consumer can start at `item`: a video keyframe, any audio packet, any frame."""
    return kind == "audio" or not isinstance(item, Packet) or bool(item.is_keyframe)


class KeyframeBacklog(Generic[MediaT]):
    """At most `limit` items of a `kind` track for one consumer, in a decodable order.

    When it is full, the oldest items up to the next one a consumer can start at are dropped
    (for audio and frames, that is the oldest item); with none queued, all of them are, and
    it waits for the next keyframe and calls `request_keyframe`. So what is queued always
    starts at a keyframe or continues what the consumer already has.
    """

    def __init__(
        self, kind: str, limit: int, request_keyframe: Callable[[], None], name: str
    ) -> None:
        if limit < 1:
            raise ValueError(f"backlog limit must be positive, not {limit}")
        self.kind = kind
        self.limit = limit
        self.name = name  # who is behind, for the log
        self.dropped = 0
        self._request_keyframe = request_keyframe
        self._items: deque[MediaT] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._waiting_for_keyframe = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._waiting_for_keyframe

    def put(self, item: MediaT) -> None:
        if self._closed:
            return
        keyframe = starts_decoding(self.kind, item)
        if self._waiting_for_keyframe:
            if not keyframe:
                self._drop(1)
                self._request_keyframe()  # rate-limited by the source
                return
            self._waiting_for_keyframe = False
        if len(self._items) >= self.limit:
            self._skip_ahead(keyframe)
            if self._waiting_for_keyframe:
                return
        self._items.append(item)
        self._ready.set()

    def _skip_ahead(self, keyframe: bool) -> None:
        queued = self._items
        following = next(
            (i for i in range(1, len(queued)) if starts_decoding(self.kind, queued[i])), None
        )
        if following is not None:
            for _ in range(following):
                queued.popleft()
            self._drop(following)
            return
        self._drop(len(queued) + (0 if keyframe else 1))
        queued.clear()
        if not keyframe:
            self._waiting_for_keyframe = True
            self._request_keyframe()

    def _drop(self, count: int) -> None:
        before = self.dropped
        self.dropped += count
        if before // 100 != self.dropped // 100 or before == 0:
            log.warning("%s is behind: skipped %d packets to a keyframe", self.name, self.dropped)

    def clear(self) -> None:
        """Forget what is queued, deliberately (not counted as dropped): a new start."""
        self._items.clear()
        self._waiting_for_keyframe = False

    async def _wait(self) -> None:
        while not self._items:
            if self._closed:
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()

    async def get(self) -> MediaT:
        """The oldest item (waiting for one); MediaStreamError once closed and empty."""
        await self._wait()
        return self._items.popleft()

    async def take(self) -> list[MediaT]:
        """Everything queued (at least one item); MediaStreamError once closed and empty."""
        await self._wait()
        items = list(self._items)
        self._items.clear()
        return items

    def close(self) -> None:
        """No more items: once the queued ones are taken, waiting raises MediaStreamError."""
        self._closed = True
        self._ready.set()
