"""A published resource: one track of a room that subscribers receive, and who is told of it.

The media server (sfu.py) registers resources, for aiortc publishers and RTMP pulls alike;
the announcer (announce.py) is its `ResourceListener` and turns them into room events.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from livesignal.media.feed import FeedTrack

MEDIA_TYPES = {"audio": 0, "video": 1}


@dataclass(eq=False)
class Resource:
    """One published track of a room, fanned out to subscribers by MediaRelay."""

    uri: str
    room_id: str
    user_id: str
    kind: str
    msid: str
    source: FeedTrack
    drain: asyncio.Task[None] | None = None
    # Its source went away for now (an RTMP publisher stopped): announced as gone, so not
    # listed and not open to new subscribers, yet kept so that existing ones resume with it.
    source_stopped: bool = False

    @property
    def media_type(self) -> int:
        return MEDIA_TYPES[self.kind]

    def describe(self) -> dict[str, Any]:
        return {"msid": self.msid, "mediaType": self.media_type, "uri": self.uri}


class ResourceListener(Protocol):
    """Told of every resource the media server registers and removes (room events)."""

    def published(self, resource: Resource) -> None: ...

    def withdrawn(self, resource: Resource) -> None: ...
