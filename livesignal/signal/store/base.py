"""The Store interface. Every method is one atomic step, whatever the implementation.

Check-then-write operations (join/switch, start/stop, relay start) are single methods here, or
go through `update_room` / `update_relay`, whose `mutate` callback runs against the current
record inside the atomic step (it may be re-run on contention, so it must be pure; raising an
ApiError from it aborts the write).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from livesignal.signal.model import Member, Relay, Room, RoomStatus, User

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JoinOutcome:
    room: Room  # the room joined, after the join
    member: Member
    newly_present: bool  # False when the user was already present here (no pv)
    anchor_came_online: bool  # the room's anchor became present by this join
    left: Member | None  # the membership the user was switched out of, if any
    left_room: Room | None  # that room, after the switch (anchor_absent_since updated)


@dataclass(frozen=True, slots=True)
class Departure:
    member: Member
    room: Room | None  # the room after the departure (None if it no longer exists)
    anchor_went_offline: bool


class Store(Protocol):
    async def ping(self) -> None:
        """Return when the store answers; raise ConnectionError/TimeoutError/OSError if not."""
        ...

    # --- counters ------------------------------------------------------------------------
    async def next_id(self, counter: str) -> int:
        """A number unique per counter name, increasing, starting at 1."""
        ...

    # --- users ---------------------------------------------------------------------------
    async def ensure_user(self, user_id: str) -> User:
        """The user, created on first sight with nick = user_id and a fresh im_userid."""
        ...

    async def get_user(self, user_id: str) -> User | None: ...

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]: ...

    async def update_user(self, user_id: str, mutate: Callable[[User], None]) -> User:
        """Apply `mutate` to the user (created if unknown) atomically; the user after it."""
        ...

    # --- rooms ---------------------------------------------------------------------------
    async def insert_room(self, room: Room, max_open_per_anchor: int = 0) -> bool:
        """Add a new room; False if its live_id is taken.

        Raises TooManyRequests if the anchor already has `max_open_per_anchor` rooms that
        are not ended (0 = no cap): counting and inserting are one step.
        """
        ...

    async def get_room(self, live_id: str) -> Room | None: ...

    async def rooms_with_status(self, statuses: Iterable[RoomStatus]) -> list[Room]: ...

    async def update_room(self, live_id: str, mutate: Callable[[Room | None], T]) -> T:
        """Apply `mutate` to the room atomically; what it does to the room is saved."""
        ...

    async def delete_room(self, live_id: str) -> list[Member]:
        """Remove the room and its memberships (no departures reported); the members."""
        ...

    # --- presence ------------------------------------------------------------------------
    async def join(
        self, user_id: str, live_id: str, now: float, rest_deadline: float | None, socket: bool
    ) -> JoinOutcome:
        """Make the user a present member of the room, leaving any other room first.

        Raises NotFound (no room) or WrongState (room ended). `rest_deadline` extends the
        REST-held presence; `socket` adds one socket hold.
        """
        ...

    async def heartbeat(
        self, user_id: str, live_id: str, now: float, rest_deadline: float
    ) -> Member | None:
        """Extend the REST-held presence of a member present at `now`, else None.

        A member whose presence lapsed has left (§3.3) even before a sweep removed it: it must
        join again (a new pv), not be revived by a late heartbeat.
        """
        ...

    async def leave(self, user_id: str, live_id: str, now: float) -> Departure | None:
        """Remove the membership whatever holds it; None if the user was not present."""
        ...

    async def release_socket(self, user_id: str, live_id: str, now: float) -> Departure | None:
        """Drop one socket hold; the departure if that was the last thing holding the member."""
        ...

    async def expire_members(self, now: float) -> list[Departure]:
        """Remove every member whose presence has lapsed by `now`."""
        ...

    async def current_room(self, user_id: str) -> str | None:
        """The room the user is a member of, if any."""
        ...

    async def get_member(self, user_id: str, live_id: str) -> Member | None: ...

    async def present_members(self, live_id: str, now: float) -> list[Member]:
        """Members present at `now`, in join order."""
        ...

    async def present_count(self, live_id: str, now: float) -> int: ...

    # --- relays --------------------------------------------------------------------------
    async def insert_relay(self, relay: Relay) -> None:
        """Add a relay and mark both rooms busy with it, atomically.

        Raises NotFound if a room is gone, WrongState if a room is not live or is busy.
        """
        ...

    async def get_relay(self, relay_id: str) -> Relay | None: ...

    async def update_relay(self, relay_id: str, mutate: Callable[[Relay | None], T]) -> T:
        """Apply `mutate` atomically; a relay left at status 5/6 frees both rooms."""
        ...

    async def active_relays(self) -> list[Relay]:
        """Relays at status 0-4."""
        ...
