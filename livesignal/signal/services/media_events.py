"""The media gateway's resources as room events: `media.published`, `media.unpublished`.

The gateway's room id is the live_id (its Token's roomName), so a resource published in the
gateway is announced to everyone joined to that live room, with the room's seq, on every
node, and replayed on resume like any room event. A gateway room that is no live room (or
one deleted since) gets no event and leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from livesignal.signal.backends.base import Tx
from livesignal.signal.model import events
from livesignal.signal.services.context import ServiceContext


class MediaEventService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def published(
        self, live_id: str, user_id: str, resources: list[dict[str, Any]]
    ) -> int | None:
        """`resources` ({uri, mediaType, msid} each) of `user_id` appeared; the event's seq,
        or None when there is no such room."""
        data = {"user_id": user_id, "resources": resources}
        return await self._emit(live_id, events.MEDIA_PUBLISHED, data)

    async def unpublished(self, live_id: str, user_id: str, uris: list[str]) -> int | None:
        """The resources `uris` of `user_id` went away; the event's seq, or None."""
        data = {"user_id": user_id, "uris": uris}
        return await self._emit(live_id, events.MEDIA_UNPUBLISHED, data)

    async def _emit(self, live_id: str, name: str, data: dict[str, Any]) -> int | None:
        async def step(tx: Tx) -> bool:
            if await tx.room(live_id) is None:
                return False
            tx.emit(live_id, name, data)
            return True

        done = await self._ctx.store.transact(step)
        return done.events[0].seq if done.result else None
