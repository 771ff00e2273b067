"""The timers of the signalling core, run by one periodic sweep.

Each sweep expires lapsed members, ends live rooms whose anchor stayed away for
`anchor_offline_close`, ends invitations unanswered for `invite_timeout`, and drops event
history past its age. Tests call `sweep()` directly after moving an injected clock; the server
runs `run()` in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from livesignal.settings import Settings
from livesignal.signal.model.errors import StoreUnavailable
from livesignal.signal.model.records import RoomStatus
from livesignal.signal.services.context import ServiceContext
from livesignal.signal.services.presence import PresenceService
from livesignal.signal.services.relay import RelayService
from livesignal.signal.services.rooms import RoomService

log = logging.getLogger(__name__)


def sweep_interval(settings: Settings) -> float:
    """Often enough that no timer fires more than a quarter of its shortest period late."""
    shortest = min(
        settings.presence.timeout,
        settings.presence.anchor_offline_close,
        settings.relay.invite_timeout,
    )
    return max(0.005, min(1.0, shortest / 4))


class Sweeper:
    def __init__(
        self,
        ctx: ServiceContext,
        presence: PresenceService,
        rooms: RoomService,
        relays: RelayService,
    ) -> None:
        self._ctx = ctx
        self._presence = presence
        self._rooms = rooms
        self._relays = relays
        self._lease_lost: list[Callable[[], None]] = []
        # Since when this node has reached the store without a break. Other nodes' leases
        # are only judged after a full presence timeout of that: coming back from an outage
        # every lease looks lapsed, though their nodes lived and will renew them at once.
        self._healthy_since: float | None = None

    def on_lease_lost(self, listener: Callable[[], None]) -> None:
        """Call `listener` when this node finds its own lease was let lapse by another node
        (it was cut off from the store too long): its sockets' memberships are gone."""
        self._lease_lost.append(listener)

    async def renew_lease(self) -> None:
        """Renew this node's lease now (before serving, and at every sweep)."""
        if await self._presence.renew_lease(self._ctx.store.now()):
            log.warning("this node's lease had lapsed: its sockets must join again")
            for listener in self._lease_lost:
                listener()

    async def sweep(self) -> None:
        """One pass over every timer. Any node may sweep at any time: each timer's change is
        a store step that re-checks its condition, so it fires exactly once cluster-wide."""
        try:
            await self._sweep()
        except (StoreUnavailable, ConnectionError, TimeoutError, OSError):
            self._healthy_since = None
            raise

    async def _sweep(self) -> None:
        now = self._ctx.store.now()
        await self.renew_lease()
        if self._healthy_since is None:
            self._healthy_since = now
        await self._presence.retry_releases()
        await self._presence.expire(now)
        if now - self._healthy_since >= self._ctx.settings.presence.timeout:
            await self._presence.expire_nodes(now)
        await self._end_abandoned_rooms(now)
        await self._relays.expire_invitations(now)
        await self._ctx.broker.trim()

    async def _end_abandoned_rooms(self, now: float) -> None:
        store = self._ctx.store
        close_after = self._ctx.settings.presence.anchor_offline_close
        for room in await store.rooms_with_status([RoomStatus.LIVE]):
            since = room.anchor_absent_since
            if since is None or since + close_after > now:
                continue
            if await self._rooms.end_by_anchor_timeout(room.live_id, since):
                log.info("room %s ended: anchor absent since %.0f", room.live_id, since)

    async def run(self, interval: float) -> None:
        """Sweep every `interval` seconds until cancelled; a failed sweep is logged, not fatal.

        An unreachable store is logged once per outage, not every interval: the timers are
        re-checked steps, so the sweeps after it catch up on whatever fell due meanwhile.
        """
        store_down = False
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except (StoreUnavailable, ConnectionError, TimeoutError, OSError) as exc:
                if not store_down:
                    log.warning("sweeps paused, the store is unreachable: %s", exc)
                store_down = True
            except Exception:
                log.exception("sweep failed; retrying next interval")
            else:
                if store_down:
                    log.info("the store answers again: sweeps resumed")
                    store_down = False
            await self._ctx.clock.sleep(interval)
