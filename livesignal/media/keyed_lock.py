"""`KeyedLock`: one asyncio lock per key, kept only while someone holds or waits for it.

The media server and the stream bridge serialise each client's requests (an exchange and its
exit, a dropped connection's clean-up). Dropping a key's lock while another request still
waits on it would let a third request take a fresh lock and run alongside the waiter; never
dropping it would keep one lock per client that ever called. So a lock is forgotten when its
last user leaves, not when a particular operation ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(eq=False)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


class KeyedLock(Generic[K]):
    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}

    def __len__(self) -> int:
        """How many keys have a holder or a waiter."""
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]
