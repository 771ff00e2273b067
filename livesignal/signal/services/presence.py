"""Who is present where (PROTOCOL §3.3), and the room events that presence changes cause.

A member is held by open sockets (per node, see model.Member) and/or a recent REST
join/heartbeat. Join, leave and switch apply to the user, not to one socket. Every change and
the events it causes are one store step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from livesignal.signal.backends.base import Tx
from livesignal.signal.model import events
from livesignal.signal.model.errors import NotFound, RejoinRequired, StoreUnavailable, WrongState
from livesignal.signal.model.records import Member, Room, RoomStatus
from livesignal.signal.model.views import user_view
from livesignal.signal.services.context import ServiceContext

Hold = Literal["rest", "socket", "none"]


@dataclass(frozen=True, slots=True)
class Joined:
    room: Room  # as the join step left it
    seq: int  # the room's seq right after the join: later events are the socket's to get
    newly_present: bool


class PresenceService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._timeout = ctx.settings.presence.timeout
        self.node_id = ctx.node_id
        # Socket holds whose release failed (store unreachable): retried by every sweep, or
        # this live node would hold those members present for ever.
        self._unreleased: list[tuple[str, str, str]] = []
        self._lease_renewed = False  # the first renewal creates the lease: nothing was lost
        self._original = ctx.settings.compat.profile == "original"

    # --- inside a step: shared with the room service (start is also a join) ----------------
    async def join_in(self, tx: Tx, user_id: str, room: Room, hold: Hold) -> bool:
        """Make the user present in `room` (a draft of this step); whether newly present."""
        if room.status == RoomStatus.ENDED:
            raise WrongState("the room has ended")
        now = tx.now
        live_id = room.live_id
        previous = await tx.user_room(user_id)
        if previous is not None and previous != live_id:
            old = await tx.member(previous, user_id)
            if old is not None:
                if old.is_present(now):
                    await self.depart_in(tx, old, events.LEFT_SWITCHED, at=now, detach=True)
                else:  # lapsed, not swept yet: it ended by timeout at its lapse
                    await self.depart_in(
                        tx, old, events.LEFT_TIMEOUT, at=old.rest_deadline, detach=False
                    )
        member = await tx.member(live_id, user_id)
        if member is not None and not member.is_present(now):
            await self.depart_in(
                tx, member, events.LEFT_TIMEOUT, at=member.rest_deadline, detach=False
            )
            member = None
        newly_present = member is None
        if member is None:
            member = Member(user_id=user_id, live_id=live_id, rest_deadline=0.0, join_order=now)
        if hold == "rest":
            member.rest_deadline = max(member.rest_deadline, now + self._timeout)
        elif hold == "socket":
            member.holds[self.node_id] = member.holds.get(self.node_id, 0) + 1
        tx.put_member(member)
        if newly_present:
            tx.visit(live_id, user_id)
            user = await tx.user(user_id)
            if user is not None:
                tx.emit(live_id, events.MEMBER_JOINED, {"user": user_view(user)})
            if user_id == room.anchor_id:
                room.anchor_absent_since = None
                tx.put_room(room)
                tx.emit(live_id, events.ANCHOR_ONLINE, {"user_id": user_id})
        return newly_present

    async def depart_in(
        self, tx: Tx, member: Member, reason: str, *, at: float, detach: bool
    ) -> None:
        """The member leaves: member.left (and anchor.offline); an absent live anchor's clock
        starts at `at`. `detach` tells the user's sockets on the room to let go of it."""
        tx.drop_member(member)
        live_id, user_id = member.live_id, member.user_id
        if detach and member.holds:
            tx.tell(user_id, events.DETACH, {"live_id": live_id})
        room = await tx.room(live_id)
        if room is None:
            return
        tx.emit(live_id, events.MEMBER_LEFT, {"user_id": user_id, "reason": reason})
        if room.anchor_id == user_id:
            tx.emit(live_id, events.ANCHOR_OFFLINE, {"user_id": user_id})
            if room.status == RoomStatus.LIVE:
                room.anchor_absent_since = at
                tx.put_room(room)

    # --- operations ------------------------------------------------------------------------
    async def join(self, user_id: str, live_id: str, *, hold: Hold = "rest") -> Joined:
        """Make the user present in the room (NotFound / WrongState if it cannot be joined).

        `hold` says what keeps the member present: a REST deadline, one more socket of this
        node, or nothing new (a socket already attached to the room re-joins it).
        """

        async def step(tx: Tx) -> tuple[Room, bool]:
            room, _ = await tx.room_and_member(live_id, user_id)  # join_in reads the member
            if room is None:
                raise NotFound("room not found")
            newly = await self.join_in(tx, user_id, room, hold)
            return room, newly

        done = await self._ctx.store.transact(step)
        room, newly = done.result
        # Re-read: the visit counters (pv, uv) are applied by the commit, not to the draft.
        room = await self._ctx.store.get_room(live_id) or room
        return Joined(room=room, seq=done.seqs.get(live_id, 0), newly_present=newly)

    async def leave(self, user_id: str, live_id: str) -> None:
        async def step(tx: Tx) -> None:
            member = await tx.member(live_id, user_id)
            if member is None or not member.is_present(tx.now):
                raise NotFound("not a member of this room")
            await self.depart_in(tx, member, events.LEFT_LEAVE, at=tx.now, detach=True)

        await self._ctx.store.transact(step)

    async def heartbeat(self, user_id: str, live_id: str, *, rest: bool = True) -> dict[str, Any]:
        """Refresh REST-held presence; the anchor of a room that is not ended (re)joins it.

        Over a socket (`rest=False`) a present member's REST timestamp is left alone: only
        REST calls set it (§3.3), so closing the socket still ends the presence at once.
        """

        async def step(tx: Tx) -> int:
            room, member = await tx.room_and_member(live_id, user_id)
            if room is None:
                raise NotFound("room not found")
            now = tx.now
            present = member is not None and member.is_present(now)
            if not rest and present:
                return int(room.status)
            if room.anchor_id == user_id and room.status != RoomStatus.ENDED:
                await self.join_in(tx, user_id, room, "rest")
                return int(room.status)
            if member is None or not present:
                if rest and self._original:
                    raise RejoinRequired()
                raise NotFound("not a member of this room")
            member.rest_deadline = max(member.rest_deadline, now + self._timeout)
            tx.put_member(member)
            return int(room.status)

        status = (await self._ctx.store.transact(step)).result
        return {"live_id": live_id, "live_status": status}

    async def release_socket(self, user_id: str, live_id: str, reason: str) -> None:
        """A socket of this node attached to the room closed (reason "leave") or went silent
        ("timeout"); the member leaves if nothing else holds it."""
        try:
            await self._release(user_id, live_id, reason)
        except (StoreUnavailable, ConnectionError, TimeoutError, OSError):
            self._unreleased.append((user_id, live_id, reason))
            raise

    async def retry_releases(self) -> None:
        """Release the holds whose release failed earlier (the sweeper calls this)."""
        pending, self._unreleased = self._unreleased, []
        for index, (user_id, live_id, reason) in enumerate(pending):
            try:
                await self._release(user_id, live_id, reason)
            except (StoreUnavailable, ConnectionError, TimeoutError, OSError):
                self._unreleased.extend(pending[index:])
                raise

    async def _release(self, user_id: str, live_id: str, reason: str) -> None:

        async def step(tx: Tx) -> None:
            member = await tx.member(live_id, user_id)
            held = member.holds.get(self.node_id, 0) if member is not None else 0
            if member is None or not held:
                return
            if held > 1:
                member.holds[self.node_id] = held - 1
            else:
                del member.holds[self.node_id]
            if member.is_present(tx.now):
                tx.put_member(member)
            else:
                await self.depart_in(tx, member, reason, at=tx.now, detach=False)

        await self._ctx.store.transact(step)

    # --- timers (the sweeper) ----------------------------------------------------------------
    async def expire(self, now: float) -> int:
        """Members whose REST hold lapsed leave (reason "timeout"), each exactly once."""
        departed = 0
        for live_id, user_id in await self._ctx.store.lapsing_members(now):

            async def step(tx: Tx, live_id: str = live_id, user_id: str = user_id) -> bool:
                member = await tx.member(live_id, user_id)
                if member is None or member.is_present(tx.now):
                    return False  # refreshed, socket-held or already gone
                # Presence ended when the REST hold lapsed, not when the sweeper noticed.
                await self.depart_in(
                    tx, member, events.LEFT_TIMEOUT, at=member.rest_deadline, detach=True
                )
                return True

            departed += (await self._ctx.store.transact(step)).result
        return departed

    async def expire_nodes(self, now: float) -> int:
        """Socket holds of nodes that stopped renewing their lease lapse (reason "timeout")."""
        store = self._ctx.store
        departed = 0
        for node_id in await store.lapsed_nodes(now):
            for live_id, user_id in await store.node_holds(node_id):

                async def step(
                    tx: Tx, live_id: str = live_id, user_id: str = user_id, node: str = node_id
                ) -> bool:
                    member = await tx.member(live_id, user_id)
                    if member is None or node not in member.holds:
                        return False
                    del member.holds[node]
                    if member.is_present(tx.now):
                        tx.put_member(member)
                        return False
                    await self.depart_in(tx, member, events.LEFT_TIMEOUT, at=tx.now, detach=False)
                    return True

                departed += (await store.transact(step)).result
            await store.forget_node(node_id)
        return departed

    async def renew_lease(self, now: float) -> bool:
        """This node is alive: its socket holds stay valid for another presence timeout.

        True if the lease had been lost (this node was cut off from the store for longer than
        the timeout, and another node let its holds lapse): its sockets' memberships are gone.
        """
        was_lost = await self._ctx.store.renew_node(self.node_id, now + self._timeout)
        renewed_before, self._lease_renewed = self._lease_renewed, True
        return was_lost and renewed_before
