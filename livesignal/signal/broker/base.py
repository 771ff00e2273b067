"""The Broker interface: deliver committed events to this node's listeners; replay history.

Events are published by the store, in the same atomic step as the change that caused them
(store/base.py). The broker carries them as data to every node that subscribed; a node builds
each event's wire frame once for all its sockets. Subscribing may take effect later than the
call (Redis): a listener must tolerate seeing a seq it already has or a gap it has to fill
from `replay`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from livesignal.signal.events import RoomEvent, UserEvent

RoomListener = Callable[[RoomEvent], None]
UserListener = Callable[[UserEvent], None]
# Called when the broker may have lost events (its connection dropped): listeners resync.
ResyncListener = Callable[[], None]

# PROTOCOL §4.5: at least the newest 1000 events of each room that are under 5 minutes old.
HISTORY_SIZE = 1000
HISTORY_AGE = 300.0


@dataclass(frozen=True, slots=True)
class Replay:
    recovered: bool
    seq: int  # the room's current seq
    events: list[RoomEvent]  # seq > since, in order (empty when not recovered)


class Broker(Protocol):
    async def subscribe_room(self, live_id: str, listener: RoomListener) -> None:
        """Deliver the room's events to `listener` from (at the latest) when this returns."""
        ...

    def unsubscribe_room(self, live_id: str, listener: RoomListener) -> None: ...

    async def subscribe_user(self, user_id: str, listener: UserListener) -> None: ...

    def unsubscribe_user(self, user_id: str, listener: UserListener) -> None: ...

    def on_resync(self, listener: ResyncListener) -> None:
        """Call `listener` after a loss of connection, once subscriptions are back."""
        ...

    async def current_seq(self, live_id: str) -> int: ...

    async def replay(self, live_id: str, since: int) -> Replay:
        """Held events with seq > since, or recovered=False if one of them is gone."""
        ...

    async def trim(self) -> None:
        """Drop held events older than the history age (the sweeper calls this)."""
        ...

    async def close(self) -> None: ...
