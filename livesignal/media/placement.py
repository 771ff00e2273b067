"""Which node a room's media lives on (PROTOCOL §5), and forwarding requests to it.

aiortc peers, RTMP pulls and pushes live in one process, so all of a room's media must be on
one node. With the Redis backend the first node to handle a gateway request for a room pins
the room to itself (a key with a lease it renews while it has media for the room); a request
for that room reaching another node (or another worker of `--workers N`) is forwarded to the
owner's node address. If the owner dies, its lease lapses and the next request pins the room
anew. The WeChat gateway's stream names are recorded too, so nginx's `on_publish` for a
mini-program's push is answered by the node that pulls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

FORWARDED_HEADER = "X-Livesignal-Forwarded"
# Headers a gateway request is decided by; the rest (hop-by-hop, host) stay behind.
FORWARDED_REQUEST_HEADERS = ("Token", "Room-Id", "RoomId", "Content-Type")
FORWARD_TIMEOUT = 30.0  # an /exchange waits for ICE gathering on the owner


class Placement(Protocol):
    async def owner_of_room(self, room_id: str) -> str | None:
        """The address of the node that owns the room's media, or None if it is this one
        (claiming the room when nobody does)."""
        ...

    async def owner_of_stream(self, stream: str) -> str | None:
        """For nginx's on_publish: the owner of the room a WeChat stream belongs to."""
        ...

    async def note_stream(self, stream: str, room_id: str) -> None: ...

    async def lost(self, room_id: str, address: str) -> None:
        """The owner at `address` did not answer: unpin the room if it still names it."""
        ...

    async def close(self) -> None: ...


class LocalPlacement:
    """One process holds everything (the memory backend): every room is local."""

    async def owner_of_room(self, room_id: str) -> str | None:
        return None

    async def owner_of_stream(self, stream: str) -> str | None:
        return None

    async def note_stream(self, stream: str, room_id: str) -> None:
        return None

    async def lost(self, room_id: str, address: str) -> None:
        return None

    async def close(self) -> None:
        return None


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
    """Rooms pinned in Redis: `ls:media:room:<id>` = "<node id> <address>" with a lease."""

    def __init__(
        self,
        client: object,
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

    @staticmethod
    def _room_key(room_id: str) -> str:
        return f"ls:media:room:{room_id}"

    @staticmethod
    def _stream_key(stream: str) -> str:
        return f"ls:media:stream:{stream}"

    async def owner_of_room(self, room_id: str) -> str | None:
        redis = self._redis
        value = await redis.eval(  # type: ignore[attr-defined]
            _CLAIM, 1, self._room_key(room_id), self._node_id, self.address, self._lease_ms
        )
        owner_id, _, address = value.decode().partition(" ")
        if owner_id == self._node_id or not address:
            self._mine.add(room_id)
            self._ensure_renewer()
            return None
        return str(address)

    async def owner_of_stream(self, stream: str) -> str | None:
        room_id = await self._redis.get(self._stream_key(stream))  # type: ignore[attr-defined]
        if room_id is None:
            return None
        return await self.owner_of_room(room_id.decode())

    async def note_stream(self, stream: str, room_id: str) -> None:
        await self._redis.set(  # type: ignore[attr-defined]
            self._stream_key(stream), room_id, px=max(self._lease_ms, 24 * 3600 * 1000)
        )

    async def lost(self, room_id: str, address: str) -> None:
        with contextlib.suppress(Exception):
            current = await self._redis.get(self._room_key(room_id))  # type: ignore[attr-defined]
            if current is not None and current.decode().endswith(" " + address):
                await self._redis.eval(  # type: ignore[attr-defined]
                    _UNPIN_IF, 1, self._room_key(room_id), current
                )

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew(), name="livesignal-media-pins")

    async def _renew(self) -> None:
        """Renew this node's pins while it has media for the room; let the others go."""
        while self._mine:
            await asyncio.sleep(self._lease_ms / 3000)
            for room_id in list(self._mine):
                key = self._room_key(room_id)
                try:
                    if self._has_media(room_id):
                        await self._redis.eval(  # type: ignore[attr-defined]
                            _CLAIM, 1, key, self._node_id, self.address, self._lease_ms
                        )
                    else:
                        self._mine.discard(room_id)
                        await self._redis.eval(  # type: ignore[attr-defined]
                            _UNPIN_IF, 1, key, f"{self._node_id} {self.address}"
                        )
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
                await self._redis.eval(  # type: ignore[attr-defined]
                    _UNPIN_IF, 1, self._room_key(room_id), f"{self._node_id} {self.address}"
                )


class Forwarder:
    """Sends a gateway request on to the node that owns the room, and its answer back."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request, address: str, body: bytes) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)
            )
        headers = {
            name: request.headers[name]
            for name in FORWARDED_REQUEST_HEADERS
            if name in request.headers
        }
        headers[FORWARDED_HEADER] = "1"
        async with self._session.request(
            request.method, f"http://{address}{request.path_qs}", headers=headers, data=body
        ) as answer:
            payload = await answer.read()
            return web.Response(
                status=answer.status,
                body=payload,
                content_type=answer.content_type,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
