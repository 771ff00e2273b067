"""Cross-room PK (relay): the state machine of PROTOCOL §3.5 and its live notifications.

Status: 0 invited → 1 accepted → 2/3 one side reported its cross-room push → 4 both did;
5 rejected and 6 ended are final. Invitations are private to the two anchors; once a relay
has reached status 1 every change is broadcast to both rooms as `pk.state`.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livesignal.signal.backends.base import Tx
from livesignal.signal.model import events
from livesignal.signal.model.auth import Identity
from livesignal.signal.model.bounds import (
    MAX_REJECT_REASON_CHARS,
    check_chars,
    check_extends,
    merge_extends,
)
from livesignal.signal.model.errors import Forbidden, NotFound, WrongState
from livesignal.signal.model.records import Relay, RelayStatus, Room, RoomStatus
from livesignal.signal.model.views import relay_view
from livesignal.signal.services.context import ServiceContext
from livesignal.signal.services.rates import UserRates

REASON_REJECTED = "rejected"
REASON_CANCELED = "canceled"
REASON_TIMEOUT = "timeout"
REASON_STOPPED = "stopped"
REASON_ROOM_ENDED = "room_ended"

# started: (reporting side, status before) -> status after
_STARTED_TRANSITIONS = {
    ("init", RelayStatus.ACCEPTED): RelayStatus.INIT_STARTED,
    ("init", RelayStatus.RECV_STARTED): RelayStatus.BOTH_STARTED,
    ("recv", RelayStatus.ACCEPTED): RelayStatus.RECV_STARTED,
    ("recv", RelayStatus.INIT_STARTED): RelayStatus.BOTH_STARTED,
}
_ALREADY_REPORTED = {
    "init": {RelayStatus.INIT_STARTED, RelayStatus.BOTH_STARTED},
    "recv": {RelayStatus.RECV_STARTED, RelayStatus.BOTH_STARTED},
}


@dataclass(frozen=True, slots=True)
class Change:
    before: Relay
    after: Relay

    @property
    def changed(self) -> bool:
        return self.before.status != self.after.status or self.before.extends != self.after.extends


class RelayService:
    def __init__(self, ctx: ServiceContext, rates: UserRates) -> None:
        self._ctx = ctx
        self._rates = rates
        self._unix_times = ctx.settings.compat.profile == "original"

    def view(self, relay: Relay) -> dict[str, Any]:
        """The relay object as this deployment's clients read it (PROTOCOL §3.5, §3.6)."""
        return relay_view(relay, unix_times=self._unix_times)

    # --- reading -------------------------------------------------------------------------
    async def get(self, relay_id: str) -> Relay:
        relay = await self._ctx.store.get_relay(relay_id)
        if relay is None:
            raise NotFound("relay not found")
        return relay

    async def info(self, relay_id: str) -> dict[str, Any]:
        return self.view(await self.get(relay_id))

    async def pending(self, caller: Identity) -> dict[str, Any]:
        relays = await self._ctx.store.active_relays()
        invited = [
            r
            for r in relays
            if r.status == RelayStatus.INVITED and r.recv_user_id == caller.user_id
        ]
        invited.sort(key=lambda r: r.created_at)
        return {"list": [self.view(r) for r in invited]}

    def _token_reply(self, relay: Relay, user_id: str) -> dict[str, Any]:
        token = ""
        if relay.status.is_established:
            other_room = relay.recv_room_id if user_id == relay.init_user_id else relay.init_room_id
            token = self._ctx.rtc_tokens.issue(other_room, user_id, self._ctx.clock.now())
        return {"relay_id": relay.relay_id, "relay_status": int(relay.status), "relay_token": token}

    async def token(self, caller: Identity, relay_id: str) -> dict[str, Any]:
        relay = await self.get(relay_id)
        if relay.party(caller.user_id) is None:
            raise Forbidden("not a party of this relay")
        if not relay.status.is_established:
            raise WrongState("the relay is not established")
        return self._token_reply(relay, caller.user_id)

    # --- starting ------------------------------------------------------------------------
    async def start(
        self, caller: Identity, init_room_id: str, recv_room_id: str, recv_user_id: str
    ) -> dict[str, Any]:
        self._rates.admit_relay_start(caller)
        auto = self._ctx.settings.relay.accept_mode == "auto"
        relay_id = f"relay_{secrets.token_hex(8)}"

        async def step(tx: Tx) -> Relay:
            init_room = await tx.room(init_room_id)
            recv_room = await tx.room(recv_room_id)
            if init_room is None or recv_room is None:
                raise NotFound("room not found")
            if caller.user_id != init_room.anchor_id and not caller.is_admin:
                raise Forbidden("only the anchor of init_room_id may start a relay")
            if recv_room.anchor_id != recv_user_id:
                raise WrongState("recv_user_id is not the anchor of recv_room_id")
            if init_room_id == recv_room_id or init_room.anchor_id == recv_user_id:
                raise WrongState("a relay needs two different rooms and anchors")
            for room in (init_room, recv_room):
                if room.status != RoomStatus.LIVE:
                    raise WrongState(f"room {room.live_id} is not live")
                if room.relay_id:
                    raise WrongState(f"room {room.live_id} already has a relay")
            now = tx.now
            relay = Relay(
                relay_id=relay_id,
                init_user_id=init_room.anchor_id,
                init_room_id=init_room_id,
                recv_room_id=recv_room_id,
                recv_user_id=recv_user_id,
                created_at=now,
                status=RelayStatus.ACCEPTED if auto else RelayStatus.INVITED,
                started_at=now if auto else None,
            )
            tx.put_relay(relay)
            for room in (init_room, recv_room):
                room.relay_id = relay_id
                tx.put_room(room)
            if auto:
                self._broadcast_state(tx, relay)
            else:
                tx.tell(recv_user_id, events.RELAY_INVITED, {"relay": self.view(relay)})
            return relay

        relay = (await self._ctx.store.transact(step)).result
        return self._token_reply(relay, relay.init_user_id)

    # --- answering an invitation ---------------------------------------------------------
    async def accept(self, caller: Identity, relay_id: str) -> dict[str, Any]:
        def accept(relay: Relay, now: float) -> None:
            relay.status = RelayStatus.ACCEPTED
            relay.started_at = now

        def announce(tx: Tx, change: Change) -> None:
            self._notify_anchors(tx, change.after, events.RELAY_ACCEPTED)
            self._broadcast_state(tx, change.after)

        change = await self._change(
            relay_id, caller, {"recv"}, {RelayStatus.INVITED}, accept, announce
        )
        return self._token_reply(change.after, change.after.recv_user_id)

    async def reject(self, caller: Identity, relay_id: str, message: str) -> dict[str, Any]:
        check_chars("reason", message, MAX_REJECT_REASON_CHARS)

        def reject(relay: Relay, now: float) -> None:
            relay.status = RelayStatus.REJECTED
            relay.stopped_at = now
            relay.reason = REASON_REJECTED

        def announce(tx: Tx, change: Change) -> None:
            self._notify_anchors(tx, change.after, events.RELAY_REJECTED, message=message)

        await self._change(relay_id, caller, {"recv"}, {RelayStatus.INVITED}, reject, announce)
        return {}

    async def cancel(self, caller: Identity, relay_id: str) -> dict[str, Any]:
        def announce(tx: Tx, change: Change) -> None:
            self._notify_anchors(tx, change.after, events.RELAY_CANCELED)

        await self._change(
            relay_id, caller, {"init"}, {RelayStatus.INVITED}, _ender(REASON_CANCELED), announce
        )
        return {}

    # --- an established relay ------------------------------------------------------------
    async def started(self, caller: Identity, relay_id: str) -> dict[str, Any]:
        relay = await self.get(relay_id)
        side = relay.party(caller.user_id)
        if side is None:
            raise Forbidden("not a party of this relay")

        def report(relay: Relay, now: float) -> None:
            if relay.status in _ALREADY_REPORTED[side]:
                return  # repeating one's own report changes nothing
            relay.status = _STARTED_TRANSITIONS[(side, relay.status)]

        await self._change(relay_id, caller, {side}, ESTABLISHED, report, self._broadcast_change)
        return {}

    async def stop(self, caller: Identity, relay_id: str) -> dict[str, Any]:
        await self._change(
            relay_id,
            caller,
            {"init", "recv"},
            ESTABLISHED,
            _ender(REASON_STOPPED),
            self._broadcast_change,
        )
        return {}

    async def update_extends(
        self, caller: Identity, relay_id: str, extends: dict[str, str]
    ) -> dict[str, Any]:
        limit = self._ctx.settings.limits.extends_bytes
        check_extends("extends", extends, limit)

        def merge(relay: Relay, now: float) -> None:
            relay.extends = merge_extends("extends", relay.extends, extends, limit)

        await self._change(
            relay_id, caller, {"init", "recv"}, ACTIVE, merge, self._broadcast_change
        )
        return {}

    # --- endings not asked for by an anchor ----------------------------------------------
    async def end_for_room_in(self, tx: Tx, room: Room, at: float) -> None:
        """In the step ending or deleting `room`: end its relay at status 0-4 (room_ended)."""
        if not room.relay_id:
            return
        relay = await tx.relay(room.relay_id)
        if relay is None or not relay.status.is_active:
            return
        before = relay.status
        _ender(REASON_ROOM_ENDED, at=at)(relay, tx.now)
        await self._save_in(tx, relay)
        if before == RelayStatus.INVITED:
            self._notify_anchors(tx, relay, events.RELAY_CANCELED)
        else:
            self._broadcast_state(tx, relay)

    async def expire_invitations(self, now: float) -> int:
        """End invitations left unanswered for invite_timeout (reason "timeout")."""
        timeout = self._ctx.settings.relay.invite_timeout
        expired = 0
        for relay in await self._ctx.store.active_relays():
            if relay.status != RelayStatus.INVITED or relay.created_at + timeout > now:
                continue

            def announce(tx: Tx, change: Change) -> None:
                self._notify_anchors(tx, change.after, events.RELAY_TIMEOUT)

            try:
                await self._change(
                    relay.relay_id,
                    None,
                    set(),
                    {RelayStatus.INVITED},
                    _ender(REASON_TIMEOUT, at=relay.created_at + timeout),
                    announce,
                )
            except (NotFound, WrongState):
                continue  # answered meanwhile
            expired += 1
        return expired

    # --- shared machinery ----------------------------------------------------------------
    async def _change(
        self,
        relay_id: str,
        caller: Identity | None,
        sides: set[str],
        allowed_from: set[RelayStatus],
        apply: Callable[[Relay, float], None],
        announce: Callable[[Tx, Change], None],
    ) -> Change:
        """Check who may change the relay and from which status, change it and announce the
        change, in one step. `caller` None is the server itself (timeouts); admins act for
        any side."""

        async def step(tx: Tx) -> Change:
            relay = await tx.relay(relay_id)
            if relay is None:
                raise NotFound("relay not found")
            if caller is not None and not caller.is_admin:
                if relay.party(caller.user_id) not in sides:
                    raise Forbidden("not allowed for this party of the relay")
            if relay.status not in allowed_from:
                if not relay.status.is_active:
                    raise WrongState("the relay has ended")
                raise WrongState(f"not allowed at relay status {int(relay.status)}")
            before = copy.copy(relay)
            before.extends = dict(relay.extends)
            apply(relay, tx.now)
            change = Change(before=before, after=relay)
            if change.changed or relay.started_at != before.started_at:
                await self._save_in(tx, relay)
                announce(tx, change)
            return change

        return (await self._ctx.store.transact(step)).result

    async def _save_in(self, tx: Tx, relay: Relay) -> None:
        """Save the relay; once it is over (status 5/6) both rooms are free again."""
        tx.put_relay(relay)
        if relay.status.is_active:
            return
        for live_id in (relay.init_room_id, relay.recv_room_id):
            room = await tx.room(live_id)
            if room is not None and room.relay_id == relay.relay_id:
                room.relay_id = ""
                tx.put_room(room)

    def _notify_anchors(self, tx: Tx, relay: Relay, name: str, **extra: Any) -> None:
        data = {"relay": self.view(relay), **extra}
        for user_id in (relay.init_user_id, relay.recv_user_id):
            tx.tell(user_id, name, data)

    def _broadcast_state(self, tx: Tx, relay: Relay) -> None:
        data = {"relay": self.view(relay)}
        for live_id in (relay.init_room_id, relay.recv_room_id):
            tx.emit(live_id, events.PK_STATE, data)

    def _broadcast_change(self, tx: Tx, change: Change) -> None:
        """pk.state for a change of a relay that has reached status 1 (not invitations)."""
        if change.changed and change.before.status.is_established:
            self._broadcast_state(tx, change.after)


ESTABLISHED = {RelayStatus(s) for s in range(1, 5)}
ACTIVE = {RelayStatus(s) for s in range(0, 5)}


def _ender(reason: str, at: float | None = None) -> Callable[[Relay, float], None]:
    def end(relay: Relay, now: float) -> None:
        relay.status = RelayStatus.ENDED
        relay.stopped_at = at if at is not None else now
        relay.reason = reason

    return end
