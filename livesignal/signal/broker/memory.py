"""In-process broker: the memory store publishes into it synchronously, inside its commit.

Delivery is synchronous and in order, so listeners of the embedded backend never see a gap or
a repeat; history is bounded by count and age.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from livesignal.signal.broker.base import (
    HISTORY_AGE,
    HISTORY_SIZE,
    Replay,
    ResyncListener,
    RoomListener,
    UserListener,
)
from livesignal.signal.clock import Clock
from livesignal.signal.events import RoomEvent, UserEvent

log = logging.getLogger(__name__)


class _RoomStream:
    __slots__ = ("seq", "history", "listeners")

    def __init__(self) -> None:
        self.seq = 0
        self.history: deque[RoomEvent] = deque(maxlen=HISTORY_SIZE)
        self.listeners: dict[RoomListener, None] = {}  # insertion-ordered set


class MemoryBroker:
    def __init__(self, clock: Clock, history_age: float = HISTORY_AGE) -> None:
        self._clock = clock
        self._history_age = history_age
        self._rooms: dict[str, _RoomStream] = {}
        self._users: dict[str, dict[UserListener, None]] = {}

    # --- publishing: the memory store's commit calls these, never a service -----------------
    def append_room(self, live_id: str, name: str, data: dict[str, Any], at: float) -> RoomEvent:
        """Give the event the room's next seq, keep it in history, deliver it in order."""
        stream = self._rooms.get(live_id)
        if stream is None:
            stream = self._rooms[live_id] = _RoomStream()
        stream.seq += 1
        event = RoomEvent(live_id, stream.seq, name, data, at)
        stream.history.append(event)
        for listener in list(stream.listeners):
            try:
                listener(event)
            except Exception:  # one broken listener must not starve the room
                log.exception("room listener failed for %s", live_id)
        return event

    def send_user(self, user_id: str, name: str, data: dict[str, Any]) -> None:
        listeners = self._users.get(user_id)
        if not listeners:
            return
        event = UserEvent(user_id, name, data)
        for listener in list(listeners):
            try:
                listener(event)
            except Exception:
                log.exception("user listener failed for %s", user_id)

    def seq_now(self, live_id: str) -> int:
        stream = self._rooms.get(live_id)
        return stream.seq if stream is not None else 0

    def forget_room(self, live_id: str) -> None:
        """A deleted room's history goes; its listeners got room.deleted and detach."""
        self._rooms.pop(live_id, None)

    # --- the Broker interface -----------------------------------------------------------
    async def subscribe_room(self, live_id: str, listener: RoomListener) -> None:
        stream = self._rooms.get(live_id)
        if stream is None:
            stream = self._rooms[live_id] = _RoomStream()
        stream.listeners[listener] = None

    def unsubscribe_room(self, live_id: str, listener: RoomListener) -> None:
        stream = self._rooms.get(live_id)
        if stream is not None:
            stream.listeners.pop(listener, None)
            if not stream.listeners and stream.seq == 0:
                # Only a subscription made it: a join of a room that does not exist (or was
                # just deleted) leaves nothing behind.
                del self._rooms[live_id]

    async def subscribe_user(self, user_id: str, listener: UserListener) -> None:
        self._users.setdefault(user_id, {})[listener] = None

    def unsubscribe_user(self, user_id: str, listener: UserListener) -> None:
        listeners = self._users.get(user_id)
        if listeners is not None:
            listeners.pop(listener, None)
            if not listeners:
                del self._users[user_id]

    def on_resync(self, listener: ResyncListener) -> None:
        return None  # nothing between the store and this broker can drop an event

    async def current_seq(self, live_id: str) -> int:
        return self.seq_now(live_id)

    async def replay(self, live_id: str, since: int) -> Replay:
        stream = self._rooms.get(live_id)
        if stream is None:
            return Replay(recovered=since == 0, seq=0, events=[])
        oldest_allowed = self._clock.now() - self._history_age
        held = [e for e in stream.history if e.seq > since and e.published_at >= oldest_allowed]
        wanted = stream.seq - since
        if len(held) != wanted:
            return Replay(recovered=False, seq=stream.seq, events=[])
        return Replay(recovered=True, seq=stream.seq, events=held)

    async def trim(self) -> None:
        oldest_allowed = self._clock.now() - self._history_age
        for stream in self._rooms.values():
            history = stream.history
            while history and history[0].published_at < oldest_allowed:
                history.popleft()

    async def close(self) -> None:
        self._rooms.clear()
        self._users.clear()
