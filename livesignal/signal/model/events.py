"""Event names, the event records the broker carries to sockets (PROTOCOL §4.3), and what a
node subscribes to them with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# Room events: to every socket joined to the room, with a per-room seq.
MEMBER_JOINED = "member.joined"
MEMBER_LEFT = "member.left"
ROOM_STARTED = "room.started"
ROOM_STOPPED = "room.stopped"
ROOM_DELETED = "room.deleted"
ROOM_EXTENDS = "room.extends"
ANCHOR_OFFLINE = "anchor.offline"
ANCHOR_ONLINE = "anchor.online"
CHAT_MESSAGE = "chat.message"
PK_STATE = "pk.state"
MEDIA_PUBLISHED = "media.published"  # the media gateway's resources of the room (PROTOCOL §6)
MEDIA_UNPUBLISHED = "media.unpublished"

# User-directed events: to every socket of one user, no live_id, no seq.
RELAY_INVITED = "relay.invited"
RELAY_ACCEPTED = "relay.accepted"
RELAY_REJECTED = "relay.rejected"
RELAY_CANCELED = "relay.canceled"
RELAY_TIMEOUT = "relay.timeout"

# member.left reasons
LEFT_LEAVE = "leave"
LEFT_TIMEOUT = "timeout"
LEFT_SWITCHED = "switched"


# User-directed control event, never sent to clients: the user's sockets attached to
# `live_id` detach, because the user left or switched rooms by some other transport.
DETACH = "_detach"


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """A room event as data: the broker carries it; each node builds the frame once."""

    live_id: str
    seq: int
    name: str
    data: dict[str, Any]
    published_at: float


@dataclass(frozen=True, slots=True)
class UserEvent:
    user_id: str
    name: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Replay:
    """A room's held events after a seq (a resume, or a node filling a gap)."""

    recovered: bool
    seq: int  # the room's current seq
    events: list[RoomEvent]  # seq > since, in order (empty when not recovered)


RoomListener = Callable[[RoomEvent], None]
UserListener = Callable[[UserEvent], None]
# Called when the broker may have lost events (its connection dropped): listeners resync.
ResyncListener = Callable[[], None]


class Subscriptions(Protocol):
    """How a node receives the events of rooms and users it has sockets for (the broker's
    delivery side: what the socket transport is given, and nothing that changes state)."""

    async def subscribe_room(self, live_id: str, listener: RoomListener) -> None:
        """Deliver the room's events to `listener` from (at the latest) when this returns."""
        ...

    def unsubscribe_room(self, live_id: str, listener: RoomListener) -> None: ...

    async def subscribe_user(self, user_id: str, listener: UserListener) -> None: ...

    def unsubscribe_user(self, user_id: str, listener: UserListener) -> None: ...

    def on_resync(self, listener: ResyncListener) -> None:
        """Call `listener` after a loss of connection, once subscriptions are back."""
        ...
