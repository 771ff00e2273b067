"""The embedded store: all state in this process's memory.

Atomicity comes from the event loop: no method awaits between its reads and its writes, so
each call runs to completion before any other request is served. Records are copy-on-write:
an object handed out is never changed afterwards, exactly like a record read from Redis.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable, Iterable
from typing import TypeVar

from livesignal.signal.errors import NotFound, TooManyRequests, WrongState
from livesignal.signal.model import Member, Relay, Room, RoomStatus, User
from livesignal.signal.store.base import Departure, JoinOutcome

T = TypeVar("T")

FIRST_IM_USERID = 1_000_000


def _clone_room(room: Room) -> Room:
    clone = copy.copy(room)
    clone.extends = dict(room.extends)
    return clone


def _clone_relay(relay: Relay) -> Relay:
    clone = copy.copy(relay)
    clone.extends = dict(relay.extends)
    return clone


class MemoryStore:
    def __init__(self) -> None:
        self._counters: dict[str, int] = {}
        self._users: dict[str, User] = {}
        self._rooms: dict[str, Room] = {}
        # live_ids by status, so listing live rooms does not walk every room ever created
        self._by_status: dict[RoomStatus, dict[str, None]] = {s: {} for s in RoomStatus}
        self._open_by_anchor: dict[str, set[str]] = {}  # anchor -> live_ids not ended
        self._visitors: dict[str, set[str]] = {}  # live_id -> users who ever joined (uv)
        self._members: dict[str, dict[str, Member]] = {}  # live_id -> user_id -> member
        self._user_room: dict[str, str] = {}  # user_id -> live_id
        # (rest_deadline, user_id, live_id) candidates for expiry; stale entries are skipped.
        self._deadlines: list[tuple[float, str, str]] = []
        self._relays: dict[str, Relay] = {}
        self._active_relays: dict[str, Relay] = {}

    async def ping(self) -> None:
        return None  # the embedded store is this process: it answers while the process does

    # --- counters ------------------------------------------------------------------------
    async def next_id(self, counter: str) -> int:
        value = self._counters.get(counter, 0) + 1
        self._counters[counter] = value
        return value

    # --- users ---------------------------------------------------------------------------
    def _ensure_user(self, user_id: str) -> User:
        user = self._users.get(user_id)
        if user is None:
            im_userid = FIRST_IM_USERID + len(self._users)
            user = User(user_id=user_id, im_userid=im_userid, nick=user_id)
            self._users[user_id] = user
        return user

    async def ensure_user(self, user_id: str) -> User:
        return self._ensure_user(user_id)

    async def get_user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        found = {}
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is not None:
                found[user_id] = user
        return found

    async def update_user(self, user_id: str, mutate: Callable[[User], None]) -> User:
        user = copy.copy(self._ensure_user(user_id))
        user.extends = dict(user.extends)
        mutate(user)
        self._users[user_id] = user
        return user

    # --- rooms ---------------------------------------------------------------------------
    def _save_room(self, room: Room) -> Room:
        """Store a changed copy of a room as its new version."""
        room.version += 1
        previous = self._rooms.get(room.live_id)
        if previous is not None and previous.status != room.status:
            del self._by_status[previous.status][room.live_id]
            self._by_status[room.status][room.live_id] = None
            if room.status == RoomStatus.ENDED:
                self._close_for_anchor(room)
        self._rooms[room.live_id] = room
        return room

    def _close_for_anchor(self, room: Room) -> None:
        open_rooms = self._open_by_anchor.get(room.anchor_id)
        if open_rooms is not None:
            open_rooms.discard(room.live_id)
            if not open_rooms:
                del self._open_by_anchor[room.anchor_id]

    async def insert_room(self, room: Room, max_open_per_anchor: int = 0) -> bool:
        if room.live_id in self._rooms:
            return False
        open_rooms = self._open_by_anchor.get(room.anchor_id, set())
        if max_open_per_anchor and len(open_rooms) >= max_open_per_anchor:
            raise TooManyRequests(
                f"at most {max_open_per_anchor} rooms that are not ended per anchor: "
                "stop or delete one first"
            )
        self._rooms[room.live_id] = _clone_room(room)
        self._by_status[room.status][room.live_id] = None
        if room.status != RoomStatus.ENDED:
            open_rooms.add(room.live_id)
            self._open_by_anchor[room.anchor_id] = open_rooms
        self._members[room.live_id] = {}
        self._visitors[room.live_id] = set()
        return True

    async def get_room(self, live_id: str) -> Room | None:
        return self._rooms.get(live_id)

    async def rooms_with_status(self, statuses: Iterable[RoomStatus]) -> list[Room]:
        rooms = self._rooms
        return [rooms[live_id] for status in set(statuses) for live_id in self._by_status[status]]

    async def update_room(self, live_id: str, mutate: Callable[[Room | None], T]) -> T:
        current = self._rooms.get(live_id)
        draft = _clone_room(current) if current is not None else None
        result = mutate(draft)
        if draft is not None:
            self._save_room(draft)
        return result

    async def delete_room(self, live_id: str) -> list[Member]:
        room = self._rooms.pop(live_id, None)
        if room is not None:
            del self._by_status[room.status][live_id]
            self._close_for_anchor(room)
        self._visitors.pop(live_id, None)
        members = self._members.pop(live_id, {})
        for user_id in members:
            if self._user_room.get(user_id) == live_id:
                del self._user_room[user_id]
        return list(members.values())

    # --- presence ------------------------------------------------------------------------
    def _remove_member(self, member: Member, now: float) -> Departure:
        """Drop a membership; note when a live room's anchor went absent."""
        room_members = self._members.get(member.live_id)
        if room_members is not None:
            room_members.pop(member.user_id, None)
        if self._user_room.get(member.user_id) == member.live_id:
            del self._user_room[member.user_id]
        room = self._rooms.get(member.live_id)
        anchor_went_offline = False
        if room is not None and room.anchor_id == member.user_id:
            anchor_went_offline = True
            if room.status == RoomStatus.LIVE:
                room = _clone_room(room)
                room.anchor_absent_since = now
                self._save_room(room)
        return Departure(member=member, room=room, anchor_went_offline=anchor_went_offline)

    async def join(
        self, user_id: str, live_id: str, now: float, rest_deadline: float | None, socket: bool
    ) -> JoinOutcome:
        room = self._rooms.get(live_id)
        if room is None:
            raise NotFound("room not found")
        if room.status == RoomStatus.ENDED:
            raise WrongState("the room has ended")
        left: Member | None = None
        left_room: Room | None = None
        previous = self._user_room.get(user_id)
        if previous is not None and previous != live_id:
            old = self._members.get(previous, {}).get(user_id)
            if old is not None:
                departure = self._remove_member(old, now)
                left, left_room = old, departure.room
        room_members = self._members[live_id]
        member = room_members.get(user_id)
        newly_present = member is None or not member.is_present(now)
        if member is None:
            member = Member(user_id=user_id, live_id=live_id, rest_deadline=0.0)
            room_members[user_id] = member
        self._user_room[user_id] = live_id
        if rest_deadline is not None and rest_deadline > member.rest_deadline:
            member.rest_deadline = rest_deadline
            heapq.heappush(self._deadlines, (rest_deadline, user_id, live_id))
        if socket:
            member.sockets += 1
        anchor_came_online = newly_present and user_id == room.anchor_id
        if newly_present or anchor_came_online:
            room = _clone_room(room)
            if newly_present:
                room.pv += 1
                visitors = self._visitors[live_id]
                if user_id not in visitors:
                    visitors.add(user_id)
                    room.uv += 1
            if user_id == room.anchor_id:
                room.anchor_absent_since = None
            self._save_room(room)
        return JoinOutcome(
            room=room,
            member=member.snapshot(),
            newly_present=newly_present,
            anchor_came_online=anchor_came_online,
            left=left,
            left_room=left_room,
        )

    async def heartbeat(
        self, user_id: str, live_id: str, now: float, rest_deadline: float
    ) -> Member | None:
        member = self._members.get(live_id, {}).get(user_id)
        if member is None or not member.is_present(now):
            return None
        if rest_deadline > member.rest_deadline:
            member.rest_deadline = rest_deadline
            heapq.heappush(self._deadlines, (rest_deadline, user_id, live_id))
        return member.snapshot()

    async def leave(self, user_id: str, live_id: str, now: float) -> Departure | None:
        member = self._members.get(live_id, {}).get(user_id)
        if member is None or not member.is_present(now):
            return None  # a lapsed member is left to the sweeper: it leaves by "timeout"
        return self._remove_member(member, now)

    async def release_socket(self, user_id: str, live_id: str, now: float) -> Departure | None:
        member = self._members.get(live_id, {}).get(user_id)
        if member is None or member.sockets == 0:
            return None
        member.sockets -= 1
        if member.is_present(now):
            return None
        return self._remove_member(member, now)

    async def expire_members(self, now: float) -> list[Departure]:
        departures = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, user_id, live_id = heapq.heappop(deadlines)
            member = self._members.get(live_id, {}).get(user_id)
            if member is None or member.rest_deadline != deadline or member.is_present(now):
                continue  # refreshed, socket-held or already gone
            # Presence ended when the REST hold lapsed, not when the sweeper noticed.
            departures.append(self._remove_member(member, deadline))
        return departures

    async def current_room(self, user_id: str) -> str | None:
        return self._user_room.get(user_id)

    async def get_member(self, user_id: str, live_id: str) -> Member | None:
        member = self._members.get(live_id, {}).get(user_id)
        return member.snapshot() if member is not None else None

    async def present_members(self, live_id: str, now: float) -> list[Member]:
        members = self._members.get(live_id, {}).values()
        return [m.snapshot() for m in members if m.is_present(now)]

    async def present_count(self, live_id: str, now: float) -> int:
        return sum(1 for m in self._members.get(live_id, {}).values() if m.is_present(now))

    # --- relays --------------------------------------------------------------------------
    async def insert_relay(self, relay: Relay) -> None:
        rooms = []
        for live_id in (relay.init_room_id, relay.recv_room_id):
            room = self._rooms.get(live_id)
            if room is None:
                raise NotFound("room not found")
            if room.status != RoomStatus.LIVE:
                raise WrongState(f"room {live_id} is not live")
            if room.relay_id:
                raise WrongState(f"room {live_id} already has a relay")
            rooms.append(room)
        for room in rooms:
            busy = _clone_room(room)
            busy.relay_id = relay.relay_id
            self._save_room(busy)
        stored = _clone_relay(relay)
        self._relays[relay.relay_id] = stored
        self._active_relays[relay.relay_id] = stored

    async def get_relay(self, relay_id: str) -> Relay | None:
        return self._relays.get(relay_id)

    async def update_relay(self, relay_id: str, mutate: Callable[[Relay | None], T]) -> T:
        current = self._relays.get(relay_id)
        draft = _clone_relay(current) if current is not None else None
        result = mutate(draft)
        if draft is not None:
            draft.version += 1
            self._relays[relay_id] = draft
            if draft.status.is_active:
                self._active_relays[relay_id] = draft
            else:
                self._active_relays.pop(relay_id, None)
                self._free_rooms(draft)
        return result

    def _free_rooms(self, relay: Relay) -> None:
        for live_id in (relay.init_room_id, relay.recv_room_id):
            room = self._rooms.get(live_id)
            if room is not None and room.relay_id == relay.relay_id:
                free = _clone_room(room)
                free.relay_id = ""
                self._save_room(free)

    async def active_relays(self) -> list[Relay]:
        return list(self._active_relays.values())
