"""The embedded backend: all state, and the broker of its events, in this process's memory.

A step's reads hand out copies (drafts); its writes and events are staged and applied by the
commit without awaiting anything, so each step is atomic: no other request runs between its
reads and its commit. Records are copy-on-write: an object handed out is never changed
afterwards, exactly like a record read from Redis.

The broker: the store publishes into it synchronously, inside its commit. Delivery is
synchronous and in order, so listeners of the embedded backend never see a gap or a repeat;
history is bounded by count and age.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any, TypeVar

from livesignal.signal.backends.base import HISTORY_AGE, HISTORY_SIZE, Committed, Step
from livesignal.signal.model.clock import Clock
from livesignal.signal.model.events import (
    Replay,
    ResyncListener,
    RoomEvent,
    RoomListener,
    UserEvent,
    UserListener,
)
from livesignal.signal.model.listeners import KeyedSets
from livesignal.signal.model.records import Member, Relay, Room, RoomStatus, User, draft

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
        self._users: KeyedSets[str, UserListener] = KeyedSets()

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
        listeners = self._users.members(user_id)
        if not listeners:
            return
        event = UserEvent(user_id, name, data)
        for listener in listeners:
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
        self._users.add(user_id, listener)

    def unsubscribe_user(self, user_id: str, listener: UserListener) -> None:
        self._users.discard(user_id, listener)

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


T = TypeVar("T")


class MemoryTx:
    """A step against the memory store: drafts read once, writes staged in order."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.now = store.now()
        self._users: dict[str, User | None] = {}
        self._rooms: dict[str, Room | None] = {}
        self._relays: dict[str, Relay | None] = {}
        self._members: dict[tuple[str, str], Member | None] = {}
        self.staged: list[tuple[Any, ...]] = []
        self.rooms_seen: set[str] = set()

    # --- reads -----------------------------------------------------------------------------
    async def user(self, user_id: str) -> User | None:
        if user_id not in self._users:
            found = self._store._users.get(user_id)
            self._users[user_id] = draft(found) if found is not None else None
        return self._users[user_id]

    async def room(self, live_id: str) -> Room | None:
        if live_id not in self._rooms:
            found = self._store._rooms.get(live_id)
            self._rooms[live_id] = draft(found) if found is not None else None
            self.rooms_seen.add(live_id)
        return self._rooms[live_id]

    async def relay(self, relay_id: str) -> Relay | None:
        if relay_id not in self._relays:
            found = self._store._relays.get(relay_id)
            self._relays[relay_id] = draft(found) if found is not None else None
        return self._relays[relay_id]

    async def member(self, live_id: str, user_id: str) -> Member | None:
        key = (live_id, user_id)
        if key not in self._members:
            found = self._store._members.get(live_id, {}).get(user_id)
            self._members[key] = found.snapshot() if found is not None else None
        return self._members[key]

    async def room_and_member(
        self, live_id: str, user_id: str
    ) -> tuple[Room | None, Member | None]:
        return await self.room(live_id), await self.member(live_id, user_id)

    async def user_room(self, user_id: str) -> str | None:
        return self._store._user_room.get(user_id)

    async def open_rooms(self, anchor_id: str) -> int:
        store = self._store
        mine = store._by_anchor.get(anchor_id, ())
        return sum(1 for live_id in mine if store._rooms[live_id].status != RoomStatus.ENDED)

    async def seq(self, live_id: str) -> int:
        self.rooms_seen.add(live_id)
        return self._store._broker.seq_now(live_id)

    # --- staged writes ---------------------------------------------------------------------
    def put_user(self, user: User) -> None:
        self.staged.append(("put_user", user))

    def put_room(self, room: Room) -> None:
        self.staged.append(("put_room", room))

    def drop_room(self, room: Room) -> None:
        self.staged.append(("drop_room", room))

    def put_relay(self, relay: Relay) -> None:
        self.staged.append(("put_relay", relay))

    def put_member(self, member: Member) -> None:
        self.staged.append(("put_member", member))

    def drop_member(self, member: Member) -> None:
        self.staged.append(("drop_member", member))

    def visit(self, live_id: str, user_id: str) -> None:
        self.staged.append(("visit", live_id, user_id))

    def emit(self, live_id: str, name: str, data: dict[str, Any]) -> None:
        self.rooms_seen.add(live_id)
        self.staged.append(("emit", live_id, name, data))

    def tell(self, user_id: str, name: str, data: dict[str, Any]) -> None:
        self.staged.append(("tell", user_id, name, data))


class MemoryStore:
    def __init__(self, broker: MemoryBroker, clock: Clock) -> None:
        self._broker = broker
        self._clock = clock
        self._counters: dict[str, int] = {}
        self._users: dict[str, User] = {}
        self._by_im: dict[int, str] = {}  # im_userid -> user_id
        self._rooms: dict[str, Room] = {}
        # live_ids by status, so listing live rooms does not walk every room ever created
        self._by_status: dict[RoomStatus, dict[str, None]] = {s: {} for s in RoomStatus}
        self._by_anchor: dict[str, dict[str, None]] = {}  # anchor -> live_ids, created order
        self._visitors: dict[str, set[str]] = {}  # live_id -> users who ever joined (uv)
        self._members: dict[str, dict[str, Member]] = {}  # live_id -> user_id -> member
        self._user_room: dict[str, str] = {}  # user_id -> live_id
        # (rest_deadline, live_id, user_id) candidates for expiry; stale entries are skipped.
        self._deadlines: list[tuple[float, str, str]] = []
        self._relays: dict[str, Relay] = {}
        self._active_relays: dict[str, Relay] = {}
        self._nodes: dict[str, float] = {}  # node id -> lease end
        self._node_holds: dict[str, set[tuple[str, str]]] = {}

    async def ping(self) -> None:
        return None  # the embedded store is this process: it answers while the process does

    def now(self) -> float:
        return self._clock.now()

    async def next_id(self, counter: str) -> int:
        value = self._counters.get(counter, 0) + 1
        self._counters[counter] = value
        return value

    # --- steps -----------------------------------------------------------------------------
    async def transact(self, step: Step[T]) -> Committed[T]:
        tx = MemoryTx(self)
        result = await step(tx)
        events = self._commit(tx)
        seqs = {live_id: self._broker.seq_now(live_id) for live_id in tx.rooms_seen}
        return Committed(result, events, seqs)

    def _commit(self, tx: MemoryTx) -> list[RoomEvent]:
        events: list[RoomEvent] = []
        dropped: list[str] = []
        for op in tx.staged:
            kind = op[0]
            if kind == "put_user":
                self._users[op[1].user_id] = op[1]
                self._by_im[op[1].im_userid] = op[1].user_id
            elif kind == "put_room":
                self._save_room(op[1])
            elif kind == "drop_room":
                self._drop_room(op[1].live_id)
                dropped.append(op[1].live_id)
            elif kind == "put_relay":
                self._save_relay(op[1])
            elif kind == "put_member":
                self._save_member(op[1])
            elif kind == "drop_member":
                self._drop_member(op[1])
        # Counters on top of the records saved above (a draft carries the counts it read).
        for op in tx.staged:
            if op[0] == "visit":
                self._visit(op[1], op[2])
        # Events after every write: a listener reading the store sees the change it hears of.
        for op in tx.staged:
            if op[0] == "emit":
                events.append(self._broker.append_room(op[1], op[2], op[3], tx.now))
            elif op[0] == "tell":
                self._broker.send_user(op[1], op[2], op[3])
        for live_id in dropped:
            self._broker.forget_room(live_id)
        return events

    def _save_room(self, room: Room) -> None:
        room.version += 1
        previous = self._rooms.get(room.live_id)
        if previous is None:
            self._by_status[room.status][room.live_id] = None
            self._members.setdefault(room.live_id, {})
            self._visitors.setdefault(room.live_id, set())
            self._by_anchor.setdefault(room.anchor_id, {})[room.live_id] = None
        elif previous.status != room.status:
            del self._by_status[previous.status][room.live_id]
            self._by_status[room.status][room.live_id] = None
        self._rooms[room.live_id] = room

    def _drop_room(self, live_id: str) -> None:
        room = self._rooms.pop(live_id, None)
        if room is not None:
            del self._by_status[room.status][live_id]
            mine = self._by_anchor.get(room.anchor_id, {})
            mine.pop(live_id, None)
            if not mine:
                self._by_anchor.pop(room.anchor_id, None)
        self._visitors.pop(live_id, None)
        for user_id in self._members.pop(live_id, {}):
            if self._user_room.get(user_id) == live_id:
                del self._user_room[user_id]

    def _save_relay(self, relay: Relay) -> None:
        relay.version += 1
        self._relays[relay.relay_id] = relay
        if relay.status.is_active:
            self._active_relays[relay.relay_id] = relay
        else:
            self._active_relays.pop(relay.relay_id, None)

    def _save_member(self, member: Member) -> None:
        room_members = self._members.setdefault(member.live_id, {})
        previous = room_members.get(member.user_id)
        if previous is not None and previous.join_order != member.join_order:
            del room_members[member.user_id]  # a rejoin lists the member last
        room_members[member.user_id] = member
        self._user_room[member.user_id] = member.live_id
        if member.rest_deadline and (
            previous is None or previous.rest_deadline != member.rest_deadline
        ):
            heapq.heappush(self._deadlines, (member.rest_deadline, member.live_id, member.user_id))
        for node_id in member.holds:
            self._node_holds.setdefault(node_id, set()).add((member.live_id, member.user_id))

    def _drop_member(self, member: Member) -> None:
        room_members = self._members.get(member.live_id)
        if room_members is not None:
            room_members.pop(member.user_id, None)
        if self._user_room.get(member.user_id) == member.live_id:
            del self._user_room[member.user_id]

    def _visit(self, live_id: str, user_id: str) -> None:
        room = self._rooms.get(live_id)
        if room is None:
            return
        counted = draft(room)
        counted.pv += 1
        visitors = self._visitors.setdefault(live_id, set())
        if user_id not in visitors:
            visitors.add(user_id)
            counted.uv += 1
        self._rooms[live_id] = counted

    # --- reads outside a step -----------------------------------------------------------
    async def get_user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        found = {}
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is not None:
                found[user_id] = user
        return found

    async def users_by_im_ids(self, im_ids: Iterable[int]) -> dict[int, User]:
        found = {}
        for im_id in im_ids:
            user_id = self._by_im.get(im_id)
            if user_id is not None:
                found[im_id] = self._users[user_id]
        return found

    async def get_room(self, live_id: str) -> Room | None:
        return self._rooms.get(live_id)

    async def get_relay(self, relay_id: str) -> Relay | None:
        return self._relays.get(relay_id)

    async def get_member(self, user_id: str, live_id: str) -> Member | None:
        member = self._members.get(live_id, {}).get(user_id)
        return member.snapshot() if member is not None else None

    async def rooms_of_anchor(self, anchor_id: str) -> list[Room]:
        return [self._rooms[live_id] for live_id in self._by_anchor.get(anchor_id, ())]

    async def rooms_with_status(self, statuses: Iterable[RoomStatus]) -> list[Room]:
        rooms = self._rooms
        return [rooms[live_id] for status in set(statuses) for live_id in self._by_status[status]]

    async def present_members(self, live_id: str, now: float) -> list[Member]:
        members = self._members.get(live_id, {}).values()
        return [m.snapshot() for m in members if m.is_present(now)]

    async def present_count(self, live_id: str, now: float) -> int:
        return sum(1 for m in self._members.get(live_id, {}).values() if m.is_present(now))

    async def active_relays(self) -> list[Relay]:
        return list(self._active_relays.values())

    async def lapsing_members(self, now: float) -> list[tuple[str, str]]:
        due = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, live_id, user_id = heapq.heappop(deadlines)
            member = self._members.get(live_id, {}).get(user_id)
            if member is not None and member.rest_deadline == deadline:
                due.append((live_id, user_id))
        return due

    # --- node leases ---------------------------------------------------------------------
    async def renew_node(self, node_id: str, until: float) -> bool:
        had = node_id in self._nodes
        self._nodes[node_id] = until
        return not had

    async def lapsed_nodes(self, now: float) -> list[str]:
        return [node_id for node_id, until in self._nodes.items() if until <= now]

    async def node_holds(self, node_id: str) -> list[tuple[str, str]]:
        return sorted(self._node_holds.get(node_id, ()))

    async def forget_node(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)
        self._node_holds.pop(node_id, None)
