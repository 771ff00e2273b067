"""The domain records the store keeps: users, rooms, members, relays."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar


class RoomStatus(IntEnum):
    CREATED = 0
    LIVE = 1
    ENDED = 2


class RelayStatus(IntEnum):
    INVITED = 0  # waiting for the receiver to accept
    ACCEPTED = 1
    INIT_STARTED = 2  # the initiator reported its cross-room push
    RECV_STARTED = 3  # the receiver reported its cross-room push
    BOTH_STARTED = 4
    REJECTED = 5
    ENDED = 6

    @property
    def is_active(self) -> bool:
        """Status 0-4: the relay still occupies both rooms."""
        return self <= RelayStatus.BOTH_STARTED

    @property
    def is_established(self) -> bool:
        """Status 1-4: both anchors agreed and the relay has not ended."""
        return RelayStatus.ACCEPTED <= self <= RelayStatus.BOTH_STARTED


@dataclass(slots=True)
class User:
    user_id: str
    im_userid: int
    nick: str
    avatar: str = ""
    extends: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Room:
    live_id: str
    title: str
    anchor_id: str
    chat_id: int
    created_at: float
    notice: str = ""
    cover_url: str = ""
    extends: dict[str, str] = field(default_factory=dict)
    status: RoomStatus = RoomStatus.CREATED
    scheduled_start: int | None = None  # the create call's start_at
    scheduled_end: int | None = None  # the create call's end_at
    publish_expire_at: int | None = None
    started_at: float | None = None  # when it went live
    ended_at: float | None = None
    # Monotonic ordering keys: "newest first" must not depend on clock resolution.
    create_order: int = 0
    start_order: int = 0
    pv: int = 0
    uv: int = 0
    # Since when the anchor has been absent while the room was live (None: present or n/a).
    anchor_absent_since: float | None = None
    relay_id: str = ""  # the relay at status 0-4 that involves this room, if any
    version: int = 0


@dataclass(slots=True)
class Member:
    """A user's presence in a room: held by open sockets and/or a recent REST call.

    Socket holds belong to the node (process) whose sockets they are: a node that dies stops
    renewing its lease, and its holds lapse without touching the other nodes' holds.
    """

    user_id: str
    live_id: str
    rest_deadline: float  # REST-held presence lapses at this unix time (0: never REST-held)
    holds: dict[str, int] = field(default_factory=dict)  # node id -> its open sockets here
    join_order: float = 0.0  # when the member (re)joined: members are listed in that order

    @property
    def sockets(self) -> int:
        return sum(self.holds.values())

    def is_present(self, now: float) -> bool:
        return bool(self.holds) or self.rest_deadline > now

    def snapshot(self) -> Member:
        """A copy to hand out (copy.copy is several times slower on this hot path)."""
        return Member(
            self.user_id, self.live_id, self.rest_deadline, dict(self.holds), self.join_order
        )


@dataclass(slots=True)
class Relay:
    relay_id: str
    init_user_id: str
    init_room_id: str
    recv_room_id: str
    recv_user_id: str
    created_at: float
    status: RelayStatus = RelayStatus.INVITED
    started_at: float | None = None  # when it reached status 1
    stopped_at: float | None = None
    extends: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    version: int = 0

    def party(self, user_id: str) -> str | None:
        """'init', 'recv' or None: which side of the relay `user_id` anchors."""
        if user_id == self.init_user_id:
            return "init"
        if user_id == self.recv_user_id:
            return "recv"
        return None


Draftable = TypeVar("Draftable", User, Room, Relay)


def draft(record: Draftable) -> Draftable:
    """A copy to change, the record itself staying as it was (copy-on-write stores)."""
    clone = copy.copy(record)
    clone.extends = dict(record.extends)
    return clone
