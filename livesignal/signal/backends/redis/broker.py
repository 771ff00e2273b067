"""The Redis broker: this node's subscriptions to room and user channels, and room history.

One pub/sub connection per node carries every channel it needs; a subscription returns once
Redis confirmed it, so events committed after that reach this node. When the connection
drops, the node reconnects with backoff, subscribes again and tells its listeners to resync:
they fill what they missed from the history stream (or close their sockets with 1012).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from livesignal.signal.backends.base import HISTORY_AGE
from livesignal.signal.backends.redis import keys
from livesignal.signal.backends.redis.guard import UNREACHABLE, guarded, store_errors
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

log = logging.getLogger(__name__)

RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class RedisBroker:
    def __init__(self, client: aioredis.Redis, clock: Clock) -> None:
        self._redis = client
        self._clock = clock
        self._rooms: KeyedSets[str, RoomListener] = KeyedSets()  # a channel per room and
        self._users: KeyedSets[str, UserListener] = KeyedSets()  # user with listeners
        self._resync: list[ResyncListener] = []
        self._pubsub: Any = None
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    # --- subscriptions ---------------------------------------------------------------------
    async def subscribe_room(self, live_id: str, listener: RoomListener) -> None:
        if self._rooms.add(live_id, listener):
            await self._subscribe(keys.room_channel(live_id))

    def unsubscribe_room(self, live_id: str, listener: RoomListener) -> None:
        if self._rooms.discard(live_id, listener):
            self._unsubscribe_later(keys.room_channel(live_id))

    async def subscribe_user(self, user_id: str, listener: UserListener) -> None:
        if self._users.add(user_id, listener):
            await self._subscribe(keys.user_channel(user_id))

    def unsubscribe_user(self, user_id: str, listener: UserListener) -> None:
        if self._users.discard(user_id, listener):
            self._unsubscribe_later(keys.user_channel(user_id))

    def on_resync(self, listener: ResyncListener) -> None:
        self._resync.append(listener)

    async def _subscribe(self, channel: str) -> None:
        await self._ensure_reader()
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmed[channel.encode()] = confirmed
        try:
            # The reader resubscribes every channel that still has listeners once Redis is
            # back; the caller is told now (503) that events may be missing.
            with store_errors():
                async with self._lock:
                    await self._pubsub.subscribe(channel)
                try:
                    await asyncio.wait_for(asyncio.shield(confirmed), 5.0)
                except TimeoutError as exc:
                    raise RedisTimeoutError("no confirmation of the subscription") from exc
        finally:
            self._confirmed.pop(channel.encode(), None)

    def _unsubscribe_later(self, channel: str) -> None:
        if self._pubsub is None or self._closed:
            return

        async def unsubscribe() -> None:
            with contextlib.suppress(RedisError, OSError):
                async with self._lock:
                    # Closed meanwhile: unsubscribing would open a connection nobody closes.
                    if not self._closed and not self._wants(channel):
                        await self._pubsub.unsubscribe(channel)

        asyncio.ensure_future(unsubscribe())

    def _wants(self, channel: str) -> bool:
        if channel.startswith(keys.room_channel("")):
            return channel[len(keys.room_channel("")) :] in self._rooms
        return channel[len(keys.user_channel("")) :] in self._users

    def _channels(self) -> list[str]:
        return [keys.room_channel(r) for r in self._rooms] + [
            keys.user_channel(u) for u in self._users
        ]

    # --- the reader ------------------------------------------------------------------------
    async def _ensure_reader(self) -> None:
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="livesignal-redis-pubsub")

    async def _read(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                attempt = 0
            except (*UNREACHABLE, OSError) as exc:
                attempt = await self._recover(attempt, exc)
                continue
            except RuntimeError as exc:
                # "pubsub connection not set": nothing subscribed yet, or a reconnection's
                # subscribe failed (Redis still down) and left this PubSub without one.
                if self._channels():
                    attempt = await self._recover(attempt, exc)
                else:
                    await asyncio.sleep(0.05)
                continue
            if message is not None:
                self._on_message(message)

    async def _recover(self, attempt: int, cause: Exception) -> int:
        """One reconnection attempt after `attempt` failed ones; the new failure count."""
        if attempt == 0:
            log.warning("redis pub/sub connection lost (%s): reconnecting", cause)
        await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
        if not await self._reconnect():
            return attempt + 1
        log.info("redis pub/sub reconnected: resubscribed, filling gaps")
        for listener in list(self._resync):
            listener()
        return 0

    async def _reconnect(self) -> bool:
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        self._pubsub = self._redis.pubsub()
        channels = self._channels()
        try:
            async with self._lock:
                if channels:
                    await self._pubsub.subscribe(*channels)
                else:
                    await self._pubsub.ping()
        except (*UNREACHABLE, OSError):
            return False
        return True

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel", b"")
        if kind == "subscribe":
            confirmed = self._confirmed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            return
        if kind != "message":
            return
        try:
            body = orjson.loads(message["data"])
        except orjson.JSONDecodeError:
            log.error("unreadable event on %r", channel)
            return
        if "seq" in body:
            event = RoomEvent(
                body["live_id"], int(body["seq"]), body["name"], body["data"], body["ts"]
            )
            for listener in self._rooms.members(event.live_id):
                try:
                    listener(event)
                except Exception:
                    log.exception("room listener failed for %s", event.live_id)
        else:
            user_event = UserEvent(body["user_id"], body["name"], body["data"])
            for user_listener in self._users.members(user_event.user_id):
                try:
                    user_listener(user_event)
                except Exception:
                    log.exception("user listener failed for %s", user_event.user_id)

    # --- history ---------------------------------------------------------------------------
    async def current_seq(self, live_id: str) -> int:
        return int(await guarded(self._redis.get(keys.room_seq(live_id))) or 0)

    async def replay(self, live_id: str, since: int) -> Replay:
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(keys.room_seq(live_id))
        pipe.xrange(keys.room_events(live_id), f"(0-{since}", "+")
        current_raw, entries = await guarded(pipe.execute())
        current = int(current_raw or 0)
        oldest_allowed = self._clock.now() - HISTORY_AGE
        held = []
        for entry_id, fields in entries:
            seq = int(entry_id.split(b"-", 1)[1])
            published_at = float(fields[b"t"])
            if published_at < oldest_allowed:
                continue
            data = orjson.loads(fields[b"d"])
            held.append(RoomEvent(live_id, seq, fields[b"n"].decode(), data, published_at))
        expected = list(range(since + 1, current + 1))
        if [event.seq for event in held] != expected:
            return Replay(recovered=False, seq=current, events=[])
        return Replay(recovered=True, seq=current, events=held)

    async def trim(self) -> None:
        """History is bounded at commit (XADD MAXLEN); age is applied when replaying."""
        return None

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
