"""The room and user event feed as the socket layer sees it: subscriptions and history.

A thin service over the broker, so that transports never hold the broker itself.
"""

from __future__ import annotations

from livesignal.signal.backends.base import (
    Broker,
    Replay,
    ResyncListener,
    RoomListener,
    UserListener,
)


class EventFeed:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def subscribe_room(self, live_id: str, listener: RoomListener) -> None:
        await self._broker.subscribe_room(live_id, listener)

    def unsubscribe_room(self, live_id: str, listener: RoomListener) -> None:
        self._broker.unsubscribe_room(live_id, listener)

    async def subscribe_user(self, user_id: str, listener: UserListener) -> None:
        await self._broker.subscribe_user(user_id, listener)

    def unsubscribe_user(self, user_id: str, listener: UserListener) -> None:
        self._broker.unsubscribe_user(user_id, listener)

    def on_resync(self, listener: ResyncListener) -> None:
        self._broker.on_resync(listener)

    async def current_seq(self, live_id: str) -> int:
        return await self._broker.current_seq(live_id)

    async def replay(self, live_id: str, since: int) -> Replay:
        return await self._broker.replay(live_id, since)
