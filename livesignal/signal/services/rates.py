"""Per-user token buckets (PROTOCOL §7): request, chat and relay-start rates.

Counted per process ("per node"): a bucket is a few floats in a dict, so checking one costs a
dict lookup and some arithmetic on the hot paths. Admin tokens are exempt; a rate of 0 turns a
limit off. Buckets that have refilled completely carry no information and are dropped, so the
dict stays as large as the set of recently active users.
"""

from __future__ import annotations

import math

from livesignal.settings import LimitsSettings
from livesignal.signal.model.auth import Identity
from livesignal.signal.model.clock import Clock
from livesignal.signal.model.errors import TooManyRequests

_MIN_PRUNE_SIZE = 1024


class TokenBuckets:
    """One bucket per key: `rate` tokens per second, holding at most `burst` tokens."""

    __slots__ = ("_rate", "_burst", "_clock", "_what", "_buckets", "_prune_at")

    def __init__(self, rate: float, burst: float, clock: Clock, what: str) -> None:
        self._rate = rate
        self._burst = max(1.0, burst)
        self._clock = clock
        self._what = what
        # key -> (tokens left, when counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._prune_at = _MIN_PRUNE_SIZE

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def take(self, key: str) -> None:
        """Spend one token of `key`'s bucket; TooManyRequests with Retry-After if it is empty."""
        if self._rate <= 0:
            return
        now = self._clock.now()
        held = self._buckets.get(key)
        if held is None:
            tokens = self._burst
        else:
            tokens, then = held
            tokens = min(self._burst, tokens + (now - then) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            retry_after = max(1, math.ceil((1.0 - tokens) / self._rate))
            raise TooManyRequests(
                f"too many {self._what}: retry in {retry_after} s", retry_after=retry_after
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._prune_at:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop buckets that are full again: they would start full anyway."""
        refill = self._burst / self._rate
        self._buckets = {
            key: (tokens, then)
            for key, (tokens, then) in self._buckets.items()
            if now - then < refill
        }
        self._prune_at = max(_MIN_PRUNE_SIZE, 2 * len(self._buckets))


class UserRates:
    """The per-user rates of §7. Each `admit_*` raises TooManyRequests past its rate."""

    REQUEST_BURST = 2.0  # bursts are multiples of the per-second rate (PROTOCOL §1)
    CHAT_BURST = 5.0

    def __init__(self, limits: LimitsSettings, clock: Clock) -> None:
        self._requests = TokenBuckets(
            limits.requests_per_second,
            limits.requests_per_second * self.REQUEST_BURST,
            clock,
            "requests",
        )
        self._chat = TokenBuckets(
            limits.chat_per_second, limits.chat_per_second * self.CHAT_BURST, clock, "messages"
        )
        self._relay_starts = TokenBuckets(
            limits.relay_starts_per_minute / 60.0,
            limits.relay_starts_per_minute,
            clock,
            "relay starts",
        )

    def admit_request(self, caller: Identity) -> None:
        """A REST call, a socket op or a socket upgrade."""
        if not caller.is_admin:
            self._requests.take(caller.user_id)

    def admit_chat(self, caller: Identity) -> None:
        if not caller.is_admin:
            self._chat.take(caller.user_id)

    def admit_relay_start(self, caller: Identity) -> None:
        if not caller.is_admin:
            self._relay_starts.take(caller.user_id)
