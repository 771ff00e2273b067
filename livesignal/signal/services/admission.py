"""Who a request or a socket acts as (PROTOCOL §2, §7): one rule for both transports.

A REST call and a `/ws` upgrade are admitted alike: a token is required, it must verify and
be unexpired, the caller must be within its request rate, and its user exists from then on
(created on first sight). Each transport only finds the token where its clients put it.
"""

from __future__ import annotations

from livesignal.signal.model.auth import Identity
from livesignal.signal.model.errors import Unauthorized
from livesignal.signal.services.context import ServiceContext
from livesignal.signal.services.rates import UserRates
from livesignal.signal.services.users import UserService


class Admission:
    def __init__(self, ctx: ServiceContext, rates: UserRates, users: UserService) -> None:
        self._ctx = ctx
        self._rates = rates
        self._users = users

    def verify(self, token: str) -> Identity:
        """The caller a token names; Unauthorized (401) or TokenExpired (499)."""
        return self._ctx.tokens.verify(token, self._ctx.clock.now())

    def check(self, token: str | None) -> Identity:
        """A caller with a valid token within its request rate (nothing is stored)."""
        if not token:
            raise Unauthorized("missing token")
        identity = self.verify(token)
        self._rates.admit_request(identity)
        return identity

    async def admit(self, token: str | None) -> Identity:
        """`check`, and the caller's user exists from now on (created on its first request)."""
        identity = self.check(token)
        await self._users.ensure(identity.user_id)
        return identity
