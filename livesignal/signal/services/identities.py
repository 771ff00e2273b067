"""Client tokens as the transports see them: verify a caller, issue a token (PROTOCOL §2)."""

from __future__ import annotations

from livesignal.signal.model.auth import Identity
from livesignal.signal.services.context import ServiceContext


class Identities:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def now(self) -> float:
        return self._ctx.clock.now()

    async def sleep(self, seconds: float) -> None:
        """Wait on the clock tokens expire by (the socket layer's timers)."""
        await self._ctx.clock.sleep(seconds)

    def verify(self, token: str) -> Identity:
        """The caller a token names; Unauthorized (401) or TokenExpired (499)."""
        return self._ctx.tokens.verify(token, self._ctx.clock.now())

    def issue(
        self,
        user_id: str,
        *,
        ttl: int | None = None,
        role: str = "",
        app_id: str = "",
        device_id: str = "",
        expires_at: int | None = None,
    ) -> tuple[str, int]:
        return self._ctx.tokens.issue(
            user_id,
            self._ctx.clock.now(),
            ttl=ttl,
            role=role,
            app_id=app_id,
            device_id=device_id,
            expires_at=expires_at,
        )
