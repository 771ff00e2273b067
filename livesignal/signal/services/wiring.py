"""The service layer wired together: what both transports call.

Transports reach state only through these services: the store and the broker stay inside.
"""

from __future__ import annotations

from dataclasses import dataclass

from livesignal.settings import Settings
from livesignal.signal.services.chat import ChatService
from livesignal.signal.services.context import ServiceContext
from livesignal.signal.services.feed import EventFeed
from livesignal.signal.services.identities import Identities
from livesignal.signal.services.media_events import MediaEventService
from livesignal.signal.services.presence import PresenceService
from livesignal.signal.services.rates import UserRates
from livesignal.signal.services.relay import RelayService
from livesignal.signal.services.rooms import RoomService
from livesignal.signal.services.sweeper import Sweeper
from livesignal.signal.services.users import UserService


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    identities: Identities
    users: UserService
    presence: PresenceService
    relays: RelayService
    rooms: RoomService
    sweeper: Sweeper
    chat: ChatService
    media_events: MediaEventService
    rates: UserRates
    feed: EventFeed
    _ctx: ServiceContext

    async def store_ready(self) -> bool:
        """Whether the backing store answers now (GET /readyz)."""
        try:
            await self._ctx.store.ping()
        except (ConnectionError, TimeoutError, OSError):
            return False
        return True

    async def close(self) -> None:
        """Let go of the backing store's connections (application shutdown)."""
        await self._ctx.broker.close()


def build_services(ctx: ServiceContext) -> Services:
    rates = UserRates(ctx.settings.limits, ctx.clock)
    users = UserService(ctx)
    presence = PresenceService(ctx)
    relays = RelayService(ctx, rates)
    rooms = RoomService(ctx, presence, relays)
    sweeper = Sweeper(ctx, presence, rooms, relays)
    return Services(
        settings=ctx.settings,
        identities=Identities(ctx),
        users=users,
        presence=presence,
        relays=relays,
        rooms=rooms,
        sweeper=sweeper,
        chat=ChatService(ctx, rates),
        media_events=MediaEventService(ctx),
        rates=rates,
        feed=EventFeed(ctx.broker),
        _ctx=ctx,
    )
