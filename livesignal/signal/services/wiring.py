"""The service layer wired together: what both transports call.

Transports reach state only through these services: the store stays inside, and of the
broker they get its delivery side alone (`subscriptions`: what this node receives).
"""

from __future__ import annotations

from dataclasses import dataclass

from livesignal.settings import Settings
from livesignal.signal.model.auth import TokenCodec
from livesignal.signal.model.clock import Clock
from livesignal.signal.model.events import Subscriptions
from livesignal.signal.services.admission import Admission
from livesignal.signal.services.chat import ChatService
from livesignal.signal.services.context import ServiceContext
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
    clock: Clock  # the store's clock: what token expiry and heartbeats are measured by
    tokens: TokenCodec  # issues client tokens (GET /server/auth/token, the CLI's tests)
    admission: Admission
    users: UserService
    presence: PresenceService
    relays: RelayService
    rooms: RoomService
    sweeper: Sweeper
    chat: ChatService
    media_events: MediaEventService
    rates: UserRates
    subscriptions: Subscriptions
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
        clock=ctx.clock,
        tokens=ctx.tokens,
        admission=Admission(ctx, rates, users),
        users=users,
        presence=presence,
        relays=relays,
        rooms=rooms,
        sweeper=sweeper,
        chat=ChatService(ctx, rates),
        media_events=MediaEventService(ctx),
        rates=rates,
        subscriptions=ctx.broker,
        _ctx=ctx,
    )
