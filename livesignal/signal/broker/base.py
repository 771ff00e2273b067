"""The Broker interface: publish events, subscribe listeners, replay recent room history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from livesignal.signal.events import RoomEvent, UserEvent

RoomListener = Callable[[RoomEvent], None]
UserListener = Callable[[UserEvent], None]

# PROTOCOL §4.5: at least the newest 1000 events of each room that are under 5 minutes old.
HISTORY_SIZE = 1000
HISTORY_AGE = 300.0


@dataclass(frozen=True, slots=True)
class Replay:
    recovered: bool
    seq: int  # the room's current seq
    events: list[RoomEvent]  # seq > since, in order (empty when not recovered)


class Broker(Protocol):
    async def publish_room(self, live_id: str, name: str, data: dict[str, Any]) -> RoomEvent:
        """Give the event the room's next seq, keep it in history, deliver it in order."""
        ...

    async def publish_user(self, user_id: str, name: str, data: dict[str, Any]) -> None: ...

    def subscribe_room(self, live_id: str, listener: RoomListener) -> None: ...

    def unsubscribe_room(self, live_id: str, listener: RoomListener) -> None: ...

    def subscribe_user(self, user_id: str, listener: UserListener) -> None: ...

    def unsubscribe_user(self, user_id: str, listener: UserListener) -> None: ...

    async def current_seq(self, live_id: str) -> int: ...

    async def replay(self, live_id: str, since: int) -> Replay:
        """Held events with seq > since, or recovered=False if one of them is gone."""
        ...

    async def trim(self) -> None:
        """Drop held events older than the history age (the sweeper calls this)."""
        ...

    async def forget_room(self, live_id: str) -> None:
        """Drop a deleted room's history."""
        ...
