"""Tells the room when the gateway's media comes and goes: media.published / media.unpublished.

The media server calls `published` and `withdrawn` for every resource it registers and
removes (an /exchange, /exit, a dropped peer connection, an RTMP pull or its exit), and when
an RTMP source stops and comes back (the stream bridge reports it; meanwhile the resource
is not listed either). Each call
only queues: one background task sends the queued changes, in order, through the
signalling service (store → broker → sockets on every node, with the room's seq). So a media
request never waits for the store, and a store that is down costs a log line, not the
media. Changes queued together for one user (the audio and video of one exchange) go out
as one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from livesignal.media.result_codes import shown
from livesignal.signal.model.errors import StoreUnavailable

if TYPE_CHECKING:
    from livesignal.media.resource import Resource

log = logging.getLogger(__name__)

# Changes waiting for the store; past this (a store down for long) the oldest are dropped.
MAX_PENDING = 10_000
CLOSE_TIMEOUT = 2.0  # seconds shutdown waits for the last changes to go out


class MediaEvents(Protocol):
    """Where the announcements go: livesignal.signal.services.media_events.MediaEventService."""

    async def published(
        self, live_id: str, user_id: str, resources: list[dict[str, Any]]
    ) -> int | None: ...

    async def unpublished(self, live_id: str, user_id: str, uris: list[str]) -> int | None: ...


@dataclass(eq=False)
class _Change:
    published: bool
    room_id: str
    user_id: str
    resources: list[Resource] = field(default_factory=list)


class ResourceAnnouncer:
    """Announces each resource once as published and once as gone, whoever reports it."""

    def __init__(self, events: MediaEvents | None) -> None:
        self._events = events
        self._announced: set[str] = set()  # uris announced as published, not yet as gone
        self._pending: deque[_Change] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._dropped = 0

    def published(self, resource: Resource) -> None:
        if self._events is None or resource.uri in self._announced:
            return
        self._announced.add(resource.uri)
        self._queue(True, resource)

    def withdrawn(self, resource: Resource) -> None:
        if resource.uri not in self._announced:
            return
        self._announced.discard(resource.uri)
        for change in self._pending:
            if change.published and resource in change.resources:
                # Gone before its announcement went out (a refused offer): never announced.
                change.resources.remove(resource)
                if not change.resources:
                    self._pending.remove(change)
                return
        self._queue(False, resource)

    def _queue(self, published: bool, resource: Resource) -> None:
        last = self._pending[-1] if self._pending else None
        key = (published, resource.room_id, resource.user_id)
        if last is not None and (last.published, last.room_id, last.user_id) == key:
            last.resources.append(resource)
        else:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self._dropped += 1
                if self._dropped % 1000 == 1:
                    log.warning("media events: the store is behind, dropped %d", self._dropped)
            self._pending.append(_Change(published, resource.room_id, resource.user_id))
            self._pending[-1].resources.append(resource)
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(
                self._send_all(), name="livesignal-media-events"
            )

    async def _send_all(self) -> None:
        try:
            while self._pending:
                change = self._pending.popleft()
                try:
                    await self._send(change)
                except (StoreUnavailable, ConnectionError, TimeoutError, OSError) as exc:
                    log.warning(
                        "media event for room %s not sent, the store is unavailable: %s",
                        shown(change.room_id),
                        exc,
                    )
                except Exception:  # a bug: logged as one, and the media goes on
                    log.exception("media event for room %s failed", shown(change.room_id))
        finally:
            self._sender = None

    async def _send(self, change: _Change) -> None:
        assert self._events is not None
        if change.published:
            resources = [r.describe() for r in change.resources]
            await self._events.published(change.room_id, change.user_id, resources)
        else:
            uris = [r.uri for r in change.resources]
            await self._events.unpublished(change.room_id, change.user_id, uris)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Send what is queued (the withdrawals of shutdown among it) for up to `timeout`."""
        sender = self._sender
        if sender is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sender), timeout)
        if not sender.done():
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        self._pending.clear()
