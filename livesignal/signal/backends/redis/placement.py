"""Media placement on Redis: which node a room's media lives on, shared by every node.

The first node to handle a gateway request for a room pins the room to itself (a key with a
lease it renews while it has media for the room); the others forward that room's requests to
it. If the owner dies, its lease lapses and the next request pins the room anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis

from livesignal.signal.backends.redis import keys

log = logging.getLogger(__name__)

# KEYS[1] room pin; ARGV node id, node address, lease ms. Returns the owner's "id address".
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then
  if string.sub(current, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  return current
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return ARGV[1] .. ' ' .. ARGV[2]
"""
# KEYS[1] room pin; ARGV[1] the pin's value to remove.
_UNPIN_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisPlacement:
    """Rooms pinned in Redis: keys.media_room(id) = "<node id> <address>" with a lease."""

    def __init__(
        self,
        client: aioredis.Redis,
        node_id: str,
        lease: float,
        has_media: Callable[[str], bool],
    ) -> None:
        self._redis = client
        self._node_id = node_id
        self._lease_ms = int(lease * 1000)
        self._has_media = has_media
        self.address = ""  # set once this node listens (livesignal serve); "" = unreachable
        self._mine: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None

    def listen_at(self, address: str) -> None:
        self.address = address

    async def owner_of_room(self, room_id: str) -> str | None:
        redis = self._redis
        value = await redis.eval(
            _CLAIM, 1, keys.media_room(room_id), self._node_id, self.address, self._lease_ms
        )
        owner_id, _, address = value.decode().partition(" ")
        if owner_id == self._node_id or not address:
            self._mine.add(room_id)
            self._ensure_renewer()
            return None
        return str(address)

    async def owner_of_stream(self, stream: str) -> str | None:
        room_id = await self._redis.get(keys.media_stream(stream))
        if room_id is None:
            return None
        return await self.owner_of_room(keys.text(room_id))

    async def note_stream(self, stream: str, room_id: str) -> None:
        await self._redis.set(
            keys.media_stream(stream), room_id, px=max(self._lease_ms, 24 * 3600 * 1000)
        )

    async def lost(self, room_id: str, address: str) -> None:
        with contextlib.suppress(Exception):
            current = await self._redis.get(keys.media_room(room_id))
            if current is not None and keys.text(current).endswith(" " + address):
                await self._redis.eval(_UNPIN_IF, 1, keys.media_room(room_id), current)

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew(), name="livesignal-media-pins")

    async def _renew(self) -> None:
        """Renew this node's pins while it has media for the room; let the others go."""
        while self._mine:
            await asyncio.sleep(self._lease_ms / 3000)
            for room_id in list(self._mine):
                key = keys.media_room(room_id)
                try:
                    if self._has_media(room_id):
                        await self._redis.eval(
                            _CLAIM, 1, key, self._node_id, self.address, self._lease_ms
                        )
                    else:
                        self._mine.discard(room_id)
                        await self._redis.eval(_UNPIN_IF, 1, key, f"{self._node_id} {self.address}")
                except Exception as exc:  # Redis away: the next round tries again
                    log.warning("could not renew the media pin of %s: %s", room_id, exc)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        mine, self._mine = self._mine, set()  # closed twice (shutdown, cleanup): once is work
        for room_id in mine:
            with contextlib.suppress(Exception):
                await self._redis.eval(
                    _UNPIN_IF, 1, keys.media_room(room_id), f"{self._node_id} {self.address}"
                )
