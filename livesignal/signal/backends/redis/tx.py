"""One store step against Redis (backends/base.py's Tx): reads and a commit plan.

Reads are remembered with the version of each record (the commit checks that none changed);
writes are staged as objects and turned into Redis commands only when the step is done
(`plan()`), because a step may still change a record after staging it, as with the memory
store. Index updates are derived from what the step read, so a heartbeat that moves only a
deadline writes only that deadline's index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis

from livesignal.signal.backends.base import HISTORY_SIZE, Committed
from livesignal.signal.backends.redis import codec, keys
from livesignal.signal.model.events import RoomEvent
from livesignal.signal.model.records import Member, Relay, Room, RoomStatus, User

T = TypeVar("T")


class RedisTx:
    """A step against Redis: reads remembered with their versions, writes staged as a plan."""

    def __init__(self, client: aioredis.Redis, now: float) -> None:
        self._redis = client
        self.now = now
        self._checks: dict[str, str] = {}  # record key -> version read ("0": absent)
        self._counts: dict[str, int] = {}
        self._read: dict[str, Any] = {}  # record key -> the draft handed out (or None)
        self._before: dict[str, Any] = {}  # record key -> what the index ops start from
        self._staged: list[tuple[Callable[[Any], None], Any]] = []
        self._ops: list[list[Any]] = []
        self._events: list[tuple[str, str, dict[str, Any]]] = []
        self._publish: list[list[Any]] = []  # room events and user events, in staged order
        self.rooms_seen: dict[str, None] = {}

    async def _record(self, key: str) -> tuple[int, bytes | None]:
        version, data = await self._redis.hmget(key, ["v", "d"])
        return self._checked(key, version, data)

    def _checked(self, key: str, version: Any, data: Any) -> tuple[int, bytes | None]:
        """A record as read: remember its version for the commit's check."""
        number = int(version) if version is not None else 0
        self._checks[key] = str(number) if data is not None else "0"
        return number, data.encode() if isinstance(data, str) else data

    # --- reads -----------------------------------------------------------------------------
    async def user(self, user_id: str) -> User | None:
        key = keys.user(user_id)
        if key not in self._read:
            _, raw = await self._record(key)
            self._read[key] = codec.load_user(user_id, raw) if raw is not None else None
        found: User | None = self._read[key]
        return found

    async def room(self, live_id: str) -> Room | None:
        key = keys.room(live_id)
        if key not in self._read:
            self._take_room(live_id, *await self._record(key))
        found: Room | None = self._read[key]
        return found

    def _take_room(self, live_id: str, version: int, raw: bytes | None) -> None:
        key = keys.room(live_id)
        self.rooms_seen[live_id] = None
        room = None
        if raw is not None:
            room = codec.load_room(live_id, raw, version, 0, 0)
            self._before[key] = (room.status, room.anchor_id)
        self._read[key] = room

    async def relay(self, relay_id: str) -> Relay | None:
        key = keys.relay(relay_id)
        if key not in self._read:
            version, raw = await self._record(key)
            self._read[key] = codec.load_relay(relay_id, raw, version) if raw else None
        found: Relay | None = self._read[key]
        return found

    async def member(self, live_id: str, user_id: str) -> Member | None:
        key = keys.member(live_id, user_id)
        if key not in self._read:
            _, raw = await self._record(key)
            self._take_member(live_id, user_id, raw)
        found: Member | None = self._read[key]
        return found

    def _take_member(self, live_id: str, user_id: str, raw: bytes | None) -> None:
        key = keys.member(live_id, user_id)
        member = codec.load_member(live_id, user_id, raw) if raw is not None else None
        self._read[key] = member
        if member is not None:
            self._before[key] = (member.join_order, member.rest_deadline, set(member.holds))

    async def room_and_member(
        self, live_id: str, user_id: str
    ) -> tuple[Room | None, Member | None]:
        room_key, member_key = keys.room(live_id), keys.member(live_id, user_id)
        if room_key not in self._read and member_key not in self._read:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hmget(room_key, ["v", "d"])
            pipe.hmget(member_key, ["v", "d"])
            (room_version, room_data), (member_version, member_data) = await pipe.execute()
            self._take_room(live_id, *self._checked(room_key, room_version, room_data))
            _, raw = self._checked(member_key, member_version, member_data)
            self._take_member(live_id, user_id, raw)
        return await self.room(live_id), await self.member(live_id, user_id)

    async def user_room(self, user_id: str) -> str | None:
        key = keys.user_at(user_id)
        if key not in self._read:
            _, raw = await self._record(key)
            self._read[key] = raw.decode() if raw is not None else None
        at: str | None = self._read[key]
        return at

    async def open_rooms(self, anchor_id: str) -> int:
        key = keys.anchor_open_rooms(anchor_id)
        if key not in self._counts:
            self._counts[key] = int(await self._redis.scard(key))
        return self._counts[key]

    async def seq(self, live_id: str) -> int:
        self.rooms_seen[live_id] = None
        return int(await self._redis.get(keys.room_seq(live_id)) or 0)

    # --- staged writes: kept as objects, turned into Redis commands by plan() ------------
    # (a step may still change a record after staging it, as with the memory store)
    def put_user(self, user: User) -> None:
        self._staged.append((self._put_user, user))

    def put_room(self, room: Room) -> None:
        if keys.room(room.live_id) not in self._read:
            raise RuntimeError("a step must read a room before it saves it")
        self._staged.append((self._put_room, room))

    def drop_room(self, room: Room) -> None:
        self._staged.append((self._drop_room, room))

    def put_relay(self, relay: Relay) -> None:
        self._staged.append((self._put_relay, relay))

    def put_member(self, member: Member) -> None:
        self._staged.append((self._put_member, member))

    def drop_member(self, member: Member) -> None:
        self._staged.append((self._drop_member, member))

    def _put_user(self, user: User) -> None:
        self._ops.append(["PUT", keys.user(user.user_id), codec.dump_user(user).decode()])
        self._ops.append(["SET", keys.im_user(user.im_userid), user.user_id])

    def _put_room(self, room: Room) -> None:
        key = keys.room(room.live_id)
        before = self._before.get(key)
        status, live_id = int(room.status), room.live_id
        open_key = keys.anchor_open_rooms(room.anchor_id)
        if before is None:  # a new room
            self._ops.append(["SADD", keys.rooms_with_status(status), live_id])
            self._ops.append(["SADD", keys.anchor_rooms(room.anchor_id), live_id])
            if room.status != RoomStatus.ENDED:
                self._ops.append(["SADD", open_key, live_id])
        elif int(before[0]) != status:
            self._ops.append(["SREM", keys.rooms_with_status(int(before[0])), live_id])
            self._ops.append(["SADD", keys.rooms_with_status(status), live_id])
            if room.status == RoomStatus.ENDED:
                self._ops.append(["SREM", open_key, live_id])
        self._before[key] = (room.status, room.anchor_id)
        self._ops.append(["PUT", key, codec.dump_room(room).decode()])

    def _drop_room(self, room: Room) -> None:
        live_id = room.live_id
        self._ops.append(["SREM", keys.rooms_with_status(int(room.status)), live_id])
        self._ops.append(["SREM", keys.anchor_open_rooms(room.anchor_id), live_id])
        self._ops.append(["SREM", keys.anchor_rooms(room.anchor_id), live_id])
        member_prefix = keys.member(live_id, "")
        at_example = keys.user_at("\x00")
        at_prefix, _, at_suffix = at_example.partition("\x00")
        self._ops.append(
            [
                "DROP_ROOM",
                keys.room_members(live_id),
                member_prefix,
                at_prefix,
                at_suffix,
                live_id,
                keys.room(live_id),
                keys.room_members(live_id),
                keys.room_present(live_id),
                keys.room_pv(live_id),
                keys.room_uv(live_id),
                keys.room_visitors(live_id),
                keys.room_seq(live_id),
                keys.room_events(live_id),
            ]
        )

    def _put_relay(self, relay: Relay) -> None:
        if relay.status.is_active:
            self._ops.append(["SADD", keys.ACTIVE_RELAYS, relay.relay_id])
        else:
            self._ops.append(["SREM", keys.ACTIVE_RELAYS, relay.relay_id])
        self._ops.append(["PUT", keys.relay(relay.relay_id), codec.dump_relay(relay).decode()])

    def _put_member(self, member: Member) -> None:
        """The record, and only the indexes that changed since the step read it (a heartbeat
        moves the deadline alone)."""
        live_id, user_id = member.live_id, member.user_id
        key = keys.member(live_id, user_id)
        pair = codec.pair(live_id, user_id)
        before = self._before.get(key)
        self._before[key] = (member.join_order, member.rest_deadline, set(member.holds))
        self._ops.append(["PUT", key, codec.dump_member(member).decode()])
        if before is None or before[0] != member.join_order:
            # A new membership: the user's current room is this one from now on.
            self._ops.append(["ZADD", keys.room_members(live_id), repr(member.join_order), user_id])
            self._ops.append(["AT_SET", keys.user_at(user_id), live_id])
        if before is None or before[1] != member.rest_deadline:
            if member.rest_deadline > self.now:
                self._ops.append(["ZADD", keys.REST_DEADLINES, repr(member.rest_deadline), pair])
            else:
                self._ops.append(["ZREM", keys.REST_DEADLINES, pair])
        if before is None or before[1] != member.rest_deadline or before[2] != set(member.holds):
            until = "inf" if member.holds else repr(member.rest_deadline)
            self._ops.append(["ZADD", keys.room_present(live_id), until, user_id])
        for node_id in set(member.holds) - (before[2] if before is not None else set()):
            self._ops.append(["SADD", keys.node_holds(node_id), pair])

    def _drop_member(self, member: Member) -> None:
        live_id, user_id = member.live_id, member.user_id
        self._ops.append(["DEL", keys.member(live_id, user_id)])
        self._ops.append(["ZREM", keys.room_members(live_id), user_id])
        self._ops.append(["ZREM", keys.room_present(live_id), user_id])
        self._ops.append(["ZREM", keys.REST_DEADLINES, codec.pair(live_id, user_id)])
        self._ops.append(["AT_CLEAR", keys.user_at(user_id), live_id])

    def visit(self, live_id: str, user_id: str) -> None:
        self._staged.append((self._visit, (live_id, user_id)))

    def _visit(self, visit: tuple[str, str]) -> None:
        live_id, user_id = visit
        self._ops.append(
            [
                "VISIT",
                keys.room_pv(live_id),
                keys.room_visitors(live_id),
                keys.room_uv(live_id),
                user_id,
            ]
        )

    def emit(self, live_id: str, name: str, data: dict[str, Any]) -> None:
        self.rooms_seen[live_id] = None
        self._events.append((live_id, name, data))
        self._publish.append(
            [
                "room",
                keys.room_seq(live_id),
                keys.room_events(live_id),
                keys.room_channel(live_id),
                live_id,
                name,
                orjson.dumps(data).decode(),
            ]
        )

    def tell(self, user_id: str, name: str, data: dict[str, Any]) -> None:
        channel = keys.user_channel(user_id)
        self._publish.append(["user", channel, user_id, name, orjson.dumps(data).decode()])

    # --- commit ----------------------------------------------------------------------------
    def plan(self) -> bytes:
        for materialize, record in self._staged:
            materialize(record)
        now = repr(self.now)
        return orjson.dumps(
            {
                "checks": [[key, version] for key, version in self._checks.items()],
                "counts": [[key, count] for key, count in self._counts.items()],
                "ops": self._ops,
                "publish": self._publish,
                "seqs": [keys.room_seq(live_id) for live_id in self.rooms_seen],
                "now": now,
                "maxlen": HISTORY_SIZE,
                "version_key": keys.VERSIONS,
            }
        )

    def committed(self, result: T, reply: list[Any]) -> Committed[T]:
        event_seqs, seqs = reply[1], reply[2]
        events = [
            RoomEvent(live_id, int(seq), name, data, self.now)
            for (live_id, name, data), seq in zip(self._events, event_seqs, strict=True)
        ]
        return Committed(
            result,
            events,
            {live_id: int(seq) for live_id, seq in zip(self.rooms_seen, seqs, strict=True)},
        )
