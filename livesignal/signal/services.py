"""The service layer wired together: what both transports call."""

from __future__ import annotations

from dataclasses import dataclass

from livesignal.signal.chat import ChatService
from livesignal.signal.context import ServiceContext
from livesignal.signal.presence import PresenceService
from livesignal.signal.rates import UserRates
from livesignal.signal.relay import RelayService
from livesignal.signal.rooms import RoomService
from livesignal.signal.sweeper import Sweeper
from livesignal.signal.users import UserService


@dataclass(frozen=True, slots=True)
class Services:
    ctx: ServiceContext
    users: UserService
    presence: PresenceService
    relays: RelayService
    rooms: RoomService
    sweeper: Sweeper
    chat: ChatService
    rates: UserRates

    async def store_ready(self) -> bool:
        """Whether the backing store answers now (GET /readyz)."""
        try:
            await self.ctx.store.ping()
        except (ConnectionError, TimeoutError, OSError):
            return False
        return True


def build_services(ctx: ServiceContext) -> Services:
    rates = UserRates(ctx.settings.limits, ctx.clock)
    users = UserService(ctx)
    presence = PresenceService(ctx)
    relays = RelayService(ctx, rates)
    rooms = RoomService(ctx, presence, relays)
    sweeper = Sweeper(ctx, presence, rooms, relays)
    return Services(
        ctx=ctx,
        users=users,
        presence=presence,
        relays=relays,
        rooms=rooms,
        sweeper=sweeper,
        chat=ChatService(ctx, rates),
        rates=rates,
    )
