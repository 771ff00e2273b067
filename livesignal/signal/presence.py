"""Who is present where (PROTOCOL §3.3), and the room events that presence changes cause.

A member is held by open sockets and/or a recent REST join/heartbeat. Join, leave and switch
apply to the user, not to one socket.
"""

from __future__ import annotations

from typing import Any, Literal

from livesignal.signal import events
from livesignal.signal.context import ServiceContext
from livesignal.signal.errors import NotFound
from livesignal.signal.model import RoomStatus
from livesignal.signal.store.base import Departure, JoinOutcome
from livesignal.signal.views import user_view

# User-directed control event (not sent to clients): the user's sockets attached to
# `live_id` must detach because the user left or switched rooms by some other transport.
DETACH = "_detach"

Hold = Literal["rest", "socket", "none"]


class PresenceService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._timeout = ctx.settings.presence.timeout

    async def join(self, user_id: str, live_id: str, *, hold: Hold = "rest") -> JoinOutcome:
        """Make the user present in the room (NotFound / WrongState if it cannot be joined).

        `hold` says what keeps the member present: a REST deadline, one more socket, or
        nothing new (a socket already attached to the room re-joins it).
        """
        now = self._ctx.clock.now()
        # A membership that lapsed but was not swept yet ended by "timeout" at its lapse: say
        # so first, so that switching away from it (or rejoining it) is not mistaken for a
        # switch and an anchor's absence counts from the lapse.
        await self.expire(now)
        deadline = now + self._timeout if hold == "rest" else None
        socket = hold == "socket"
        outcome = await self._ctx.store.join(user_id, live_id, now, deadline, socket)
        if outcome.left is not None:
            departure = Departure(
                member=outcome.left,
                room=outcome.left_room,
                anchor_went_offline=bool(
                    outcome.left_room and outcome.left_room.anchor_id == user_id
                ),
            )
            await self._announce_departure(departure, events.LEFT_SWITCHED)
        if outcome.newly_present:
            user = await self._ctx.store.ensure_user(user_id)
            await self._ctx.broker.publish_room(
                live_id, events.MEMBER_JOINED, {"user": user_view(user)}
            )
        if outcome.anchor_came_online:
            await self._ctx.broker.publish_room(live_id, events.ANCHOR_ONLINE, {"user_id": user_id})
        return outcome

    async def leave(self, user_id: str, live_id: str) -> None:
        departure = await self._ctx.store.leave(user_id, live_id, self._ctx.clock.now())
        if departure is None:
            raise NotFound("not a member of this room")
        await self._announce_departure(departure, events.LEFT_LEAVE)

    async def heartbeat(self, user_id: str, live_id: str, *, rest: bool = True) -> dict[str, Any]:
        """Refresh REST-held presence; the anchor of a room that is not ended (re)joins it.

        Over a socket (`rest=False`) a present member's REST timestamp is left alone: only
        REST calls set it (§3.3), so closing the socket still ends the presence at once.
        """
        room = await self._ctx.store.get_room(live_id)
        if room is None:
            raise NotFound("room not found")
        if not rest:
            member = await self._ctx.store.get_member(user_id, live_id)
            if member is not None and member.is_present(self._ctx.clock.now()):
                return {"live_id": live_id, "live_status": int(room.status)}
        if room.anchor_id == user_id and room.status != RoomStatus.ENDED:
            outcome = await self.join(user_id, live_id)
            return {"live_id": live_id, "live_status": int(outcome.room.status)}
        now = self._ctx.clock.now()
        member = await self._ctx.store.heartbeat(user_id, live_id, now, now + self._timeout)
        if member is None:
            raise NotFound("not a member of this room")
        return {"live_id": live_id, "live_status": int(room.status)}

    async def release_socket(self, user_id: str, live_id: str, reason: str) -> None:
        """A socket attached to the room closed (reason "leave") or went silent ("timeout");
        the member leaves if nothing else holds it."""
        departure = await self._ctx.store.release_socket(user_id, live_id, self._ctx.clock.now())
        if departure is not None:
            await self._announce_departure(departure, reason, detach=False)

    async def expire(self, now: float) -> list[Departure]:
        """Remove members whose presence lapsed (reason "timeout")."""
        departures = await self._ctx.store.expire_members(now)
        for departure in departures:
            await self._announce_departure(departure, events.LEFT_TIMEOUT)
        return departures

    async def _announce_departure(
        self, departure: Departure, reason: str, *, detach: bool = True
    ) -> None:
        member = departure.member
        broker = self._ctx.broker
        if detach and member.sockets:
            await broker.publish_user(member.user_id, DETACH, {"live_id": member.live_id})
        if departure.room is None:
            return
        await broker.publish_room(
            member.live_id, events.MEMBER_LEFT, {"user_id": member.user_id, "reason": reason}
        )
        if departure.anchor_went_offline:
            await broker.publish_room(
                member.live_id, events.ANCHOR_OFFLINE, {"user_id": member.user_id}
            )
