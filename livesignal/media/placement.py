"""Which node a room's media lives on (PROTOCOL §5): the interface, and the one-process case.

aiortc peers, RTMP pulls and pushes live in one process, so all of a room's media must be on
one node. With the Redis backend the first node to handle a gateway request for a room pins
the room to itself (a key with a lease it renews while it has media for the room); a request
for that room reaching another node (or another worker of `--workers N`) is forwarded to the
owner's node address. If the owner dies, its lease lapses and the next request pins the room
anew. The WeChat gateway's stream names are recorded too, so nginx's `on_publish` for a
mini-program's push is answered by the node that pulls it. The Redis placement lives with the
Redis backend (livesignal/signal/backends/redis/placement.py); requests are forwarded by
livesignal/media/http/forwarding.py.
"""

from __future__ import annotations

from typing import Protocol


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

    def listen_at(self, address: str) -> None:
        """Where other nodes reach this one's media (its own listener): set once it listens."""
        ...


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

    def listen_at(self, address: str) -> None:
        return None
