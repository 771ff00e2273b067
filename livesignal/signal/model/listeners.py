"""`KeyedSets`: members grouped by key, saying when a key gets its first and loses its last.

Whatever subscribes once per key on behalf of many listeners (a node's pub/sub channel per
room, a user's channel for all their sockets) needs exactly that: subscribe when the first
listener of a key arrives, unsubscribe when the last one leaves.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)


class KeyedSets(Generic[K, V]):
    __slots__ = ("_sets",)

    def __init__(self) -> None:
        self._sets: dict[K, dict[V, None]] = {}  # insertion-ordered sets

    def add(self, key: K, member: V) -> bool:
        """Add `member` under `key`; True if it is the key's first."""
        members = self._sets.get(key)
        if members is None:
            self._sets[key] = {member: None}
            return True
        members[member] = None
        return False

    def discard(self, key: K, member: V) -> bool:
        """Remove `member` from `key`; True if the key has none left (and is forgotten)."""
        members = self._sets.get(key)
        if members is None:
            return False
        members.pop(member, None)
        if members:
            return False
        del self._sets[key]
        return True

    def members(self, key: K) -> list[V]:
        """A copy of the key's members, in the order they came: safe to act on while they
        add and discard themselves."""
        members = self._sets.get(key)
        return list(members) if members else []

    def __contains__(self, key: object) -> bool:
        return key in self._sets

    def __iter__(self) -> Iterator[K]:
        return iter(self._sets)

    def __len__(self) -> int:
        return len(self._sets)

    def clear(self) -> None:
        self._sets.clear()
