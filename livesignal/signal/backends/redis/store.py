"""The Redis store: many nodes, one state (PROTOCOL §5).

Steps run in Python against records read from Redis (tx.py's RedisTx); this module runs them,
commits them and answers the reads outside a step.

A step remembers the version of each record it read; its writes, index updates and events go
to Redis as one plan, committed by one Lua script (commit.lua, loaded once, run by EVALSHA)
that first checks nothing the step read has changed since. If something did, the step runs
again on fresh reads (optimistic concurrency). The commit gives each room event the room's
next seq, appends it to the room's history stream and publishes it, all inside the same
script: seq order is the order of the changes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from livesignal.signal.backends.base import Committed, Step
from livesignal.signal.backends.redis import codec, keys
from livesignal.signal.backends.redis.guard import UNREACHABLE, guarded, store_errors
from livesignal.signal.backends.redis.tx import RedisTx
from livesignal.signal.model.clock import Clock
from livesignal.signal.model.errors import StoreUnavailable
from livesignal.signal.model.records import Member, Relay, Room, RoomStatus, User

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 200  # a step that keeps conflicting this often is answered 503
COMMIT_SCRIPT = resources.files(__package__ or "").joinpath("commit.lua").read_text()


class RedisStore:
    def __init__(self, client: aioredis.Redis, clock: Clock) -> None:
        self.redis = client
        self._clock = clock
        self._script_sha: str | None = None

    def now(self) -> float:
        return self._clock.now()

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except UNREACHABLE as exc:  # not a 503 here: /readyz and start-up ask, and say so
            raise ConnectionError(str(exc)) from exc

    async def next_id(self, counter: str) -> int:
        return int(await guarded(self.redis.incr(keys.counter(counter))))

    # --- steps -----------------------------------------------------------------------------
    async def transact(self, step: Step[T]) -> Committed[T]:
        with store_errors():
            for attempt in range(MAX_ATTEMPTS):
                tx = RedisTx(self.redis, self.now())
                result = await step(tx)
                reply = await self._commit(tx.plan())
                if reply[0] == b"ok":
                    return tx.committed(result, reply)
                if attempt >= 3:  # contention: let the others through
                    await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 20)))
        log.error("a store step conflicted %d times in a row", MAX_ATTEMPTS)
        raise StoreUnavailable("the store is too busy: retry")

    async def _commit(self, plan: bytes) -> list[Any]:
        if self._script_sha is None:
            self._script_sha = await self.redis.script_load(COMMIT_SCRIPT)
        try:
            reply: list[Any] = await self.redis.evalsha(self._script_sha, 0, plan)
        except NoScriptError:  # Redis restarted without its script cache
            self._script_sha = await self.redis.script_load(COMMIT_SCRIPT)
            reply = await self.redis.evalsha(self._script_sha, 0, plan)
        return reply

    # --- reads outside a step -----------------------------------------------------------
    async def get_user(self, user_id: str) -> User | None:
        raw = await guarded(self.redis.hget(keys.user(user_id), "d"))
        return codec.load_user(user_id, raw) if raw is not None else None

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for user_id in wanted:
            pipe.hget(keys.user(user_id), "d")
        raws = await guarded(pipe.execute())
        return {
            user_id: codec.load_user(user_id, raw)
            for user_id, raw in zip(wanted, raws, strict=True)
            if raw is not None
        }

    async def users_by_im_ids(self, im_ids: Iterable[int]) -> dict[int, User]:
        wanted = list(dict.fromkeys(im_ids))
        if not wanted:
            return {}
        user_ids = await guarded(self.redis.mget([keys.im_user(i) for i in wanted]))
        named = {i: u.decode() for i, u in zip(wanted, user_ids, strict=True) if u is not None}
        users = await self.get_users(named.values())
        return {i: users[u] for i, u in named.items() if u in users}

    async def get_room(self, live_id: str) -> Room | None:
        rooms = await self._rooms([live_id])
        return rooms[0] if rooms else None

    async def _rooms(self, live_ids: list[str]) -> list[Room]:
        if not live_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for live_id in live_ids:
            pipe.hmget(keys.room(live_id), ["v", "d"])
            pipe.get(keys.room_pv(live_id))
            pipe.get(keys.room_uv(live_id))
        replies = await guarded(pipe.execute())
        rooms = []
        for index, live_id in enumerate(live_ids):
            (version, raw), pv, uv = replies[3 * index : 3 * index + 3]
            if raw is not None:
                rooms.append(
                    codec.load_room(live_id, raw, int(version), int(pv or 0), int(uv or 0))
                )
        return rooms

    async def get_relay(self, relay_id: str) -> Relay | None:
        version, raw = await guarded(self.redis.hmget(keys.relay(relay_id), ["v", "d"]))
        return codec.load_relay(relay_id, raw, int(version)) if raw is not None else None

    async def get_member(self, user_id: str, live_id: str) -> Member | None:
        raw = await guarded(self.redis.hget(keys.member(live_id, user_id), "d"))
        return codec.load_member(live_id, user_id, raw) if raw is not None else None

    async def rooms_of_anchor(self, anchor_id: str) -> list[Room]:
        live_ids = await guarded(self.redis.smembers(keys.anchor_rooms(anchor_id)))
        rooms = await self._rooms([keys.text(live_id) for live_id in live_ids])
        return sorted(rooms, key=lambda room: room.create_order)

    async def rooms_with_status(self, statuses: Iterable[RoomStatus]) -> list[Room]:
        live_ids: list[str] = []
        for status in dict.fromkeys(statuses):
            members = await guarded(self.redis.smembers(keys.rooms_with_status(int(status))))
            live_ids.extend(m.decode() for m in members)
        rooms = await self._rooms(live_ids)
        wanted = set(statuses)
        return [room for room in rooms if room.status in wanted]

    async def _members(self, live_id: str) -> list[Member]:
        user_ids = await guarded(self.redis.zrange(keys.room_members(live_id), 0, -1))
        if not user_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hget(keys.member(live_id, user_id.decode()), "d")
        raws = await guarded(pipe.execute())
        return [
            codec.load_member(live_id, user_id.decode(), raw)
            for user_id, raw in zip(user_ids, raws, strict=True)
            if raw is not None
        ]

    async def present_members(self, live_id: str, now: float) -> list[Member]:
        return [m for m in await self._members(live_id) if m.is_present(now)]

    async def present_count(self, live_id: str, now: float) -> int:
        count = await guarded(self.redis.zcount(keys.room_present(live_id), f"({now!r}", "+inf"))
        return int(count)

    async def active_relays(self) -> list[Relay]:
        relay_ids = await guarded(self.redis.smembers(keys.ACTIVE_RELAYS))
        relays = []
        for relay_id in relay_ids:
            relay = await self.get_relay(relay_id.decode())
            if relay is not None and relay.status.is_active:
                relays.append(relay)
        return relays

    async def lapsing_members(self, now: float) -> list[tuple[str, str]]:
        """Claimed: each due entry goes to one sweeper; its step re-checks the member."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrangebyscore(keys.REST_DEADLINES, "-inf", now)
        pipe.zremrangebyscore(keys.REST_DEADLINES, "-inf", now)
        due, _ = await guarded(pipe.execute())
        return [codec.unpair(entry) for entry in due]

    # --- node leases ---------------------------------------------------------------------
    async def renew_node(self, node_id: str, until: float) -> bool:
        added = await guarded(self.redis.zadd(keys.NODES, {node_id: until}))
        return bool(added)

    async def lapsed_nodes(self, now: float) -> list[str]:
        lapsed = await guarded(self.redis.zrangebyscore(keys.NODES, "-inf", now))
        return [node.decode() for node in lapsed]

    async def node_holds(self, node_id: str) -> list[tuple[str, str]]:
        entries = await guarded(self.redis.smembers(keys.node_holds(node_id)))
        return sorted(codec.unpair(entry) for entry in entries)

    async def forget_node(self, node_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(keys.NODES, node_id)
        pipe.delete(keys.node_holds(node_id))
        await guarded(pipe.execute())


__all__ = ["RedisStore", "RedisError"]
