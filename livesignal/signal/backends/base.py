"""The two interfaces every backend implements: Store (state and the events its changes
cause, in one atomic step) and Broker (delivering those events, replaying history).

Every change goes through `transact(step)`: the step reads records through a `Tx`, changes the
drafts it was handed, stages writes and events, and the store commits all of it at once, or
none of it. A room event gets its seq in that same commit, so seq order is the order of the
changes on every node (PROTOCOL §5). A step may be run again when another node changed what
it read (optimistic concurrency), so it must only read through the Tx and stage through it;
raising an ApiError from it aborts the step and nothing is written.

The embedded MemoryStore commits by applying the staged changes without yielding; the Redis
store checks the versions of what the step read and applies everything in one Lua script.

The Broker interface: deliver committed events to this node's listeners; replay history.

Events are published by the store, in the same atomic step as the change that caused them
(the Store above). The broker carries them as data to every node that subscribed; a node builds
each event's wire frame once for all its sockets. Subscribing may take effect later than the
call (Redis): a listener must tolerate seeing a seq it already has or a gap it has to fill
from `replay`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from livesignal.signal.model.clock import Clock
from livesignal.signal.model.events import (
    Replay,
    RoomEvent,
    Subscriptions,
)
from livesignal.signal.model.records import Member, Relay, Room, RoomStatus, User

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Tx(Protocol):
    """One atomic step. Records read are drafts: change them, then `put_*` them to save."""

    now: float  # the step's time: one clock for every node (the store's)

    # --- reads -----------------------------------------------------------------------------
    async def user(self, user_id: str) -> User | None: ...

    async def room(self, live_id: str) -> Room | None: ...

    async def relay(self, relay_id: str) -> Relay | None: ...

    async def member(self, live_id: str, user_id: str) -> Member | None: ...

    async def room_and_member(
        self, live_id: str, user_id: str
    ) -> tuple[Room | None, Member | None]:
        """`room(live_id)` and `member(live_id, user_id)` read together (one round trip)."""
        ...

    async def user_room(self, user_id: str) -> str | None:
        """The room the user is a member of, if any."""
        ...

    async def open_rooms(self, anchor_id: str) -> int:
        """How many rooms that are not ended the user anchors."""
        ...

    async def seq(self, live_id: str) -> int:
        """The room's seq as of this step's reads."""
        ...

    # --- staged writes (applied at commit, in order) ---------------------------------------
    def put_user(self, user: User) -> None: ...

    def put_room(self, room: Room) -> None: ...

    def drop_room(self, room: Room) -> None:
        """Delete the room with its memberships (no departures) and its event history."""
        ...

    def put_relay(self, relay: Relay) -> None: ...

    def put_member(self, member: Member) -> None:
        """Save a membership; the user's current room becomes its room."""
        ...

    def drop_member(self, member: Member) -> None: ...

    def visit(self, live_id: str, user_id: str) -> None:
        """Count a join that made the user present: pv + 1, and uv + 1 on a first visit."""
        ...

    def emit(self, live_id: str, name: str, data: dict[str, Any]) -> None:
        """A room event: it gets the room's next seq when the step commits."""
        ...

    def tell(self, user_id: str, name: str, data: dict[str, Any]) -> None:
        """A user-directed event (no seq)."""
        ...


@dataclass(frozen=True, slots=True)
class Committed(Generic[T_co]):
    """What a committed step returned, the room events it published (with their seqs) and
    the seq of every room it read or emitted into, as of the commit."""

    result: T_co
    events: list[RoomEvent] = field(default_factory=list)
    seqs: dict[str, int] = field(default_factory=dict)


Step = Callable[[Tx], Awaitable[T]]


class Store(Protocol):
    async def ping(self) -> None:
        """Return when the store answers; raise ConnectionError/TimeoutError/OSError if not."""
        ...

    def now(self) -> float:
        """The store's clock (unix seconds): what deadlines written to it are measured by."""
        ...

    async def transact(self, step: Step[T]) -> Committed[T]:
        """Run `step` and commit what it staged atomically (re-running it on contention)."""
        ...

    async def next_id(self, counter: str) -> int:
        """A number unique per counter name, increasing, starting at 1."""
        ...

    # --- reads outside a step (each one consistent on its own) ---------------------------
    async def get_user(self, user_id: str) -> User | None: ...

    async def get_users(self, user_ids: Iterable[str]) -> dict[str, User]: ...

    async def users_by_im_ids(self, im_ids: Iterable[int]) -> dict[int, User]:
        """The users with those im_userids (a user's im_userid never changes)."""
        ...

    async def get_room(self, live_id: str) -> Room | None: ...

    async def get_relay(self, relay_id: str) -> Relay | None: ...

    async def get_member(self, user_id: str, live_id: str) -> Member | None: ...

    async def rooms_with_status(self, statuses: Iterable[RoomStatus]) -> list[Room]: ...

    async def rooms_of_anchor(self, anchor_id: str) -> list[Room]:
        """Every room the user anchors, whatever its status (deleted ones are gone)."""
        ...

    async def present_members(self, live_id: str, now: float) -> list[Member]:
        """Members present at `now`, in join order."""
        ...

    async def present_count(self, live_id: str, now: float) -> int: ...

    async def active_relays(self) -> list[Relay]:
        """Relays at status 0-4."""
        ...

    async def lapsing_members(self, now: float) -> list[tuple[str, str]]:
        """(live_id, user_id) of members whose REST hold lapsed by `now` (candidates: the
        sweeper re-checks each in a step)."""
        ...

    # --- node leases: socket holds of a node that stops renewing lapse -------------------
    async def renew_node(self, node_id: str, until: float) -> bool:
        """Extend the node's lease; True if it had none (new, or forgotten as lapsed)."""
        ...

    async def lapsed_nodes(self, now: float) -> list[str]: ...

    async def node_holds(self, node_id: str) -> list[tuple[str, str]]:
        """(live_id, user_id) of the memberships the node holds sockets in."""
        ...

    async def forget_node(self, node_id: str) -> None: ...


# --- the Broker -------------------------------------------------------------------------
# PROTOCOL §4.5: at least the newest 1000 events of each room that are under 5 minutes old.
HISTORY_SIZE = 1000
HISTORY_AGE = 300.0


class Broker(Subscriptions, Protocol):
    """Subscriptions (events.Subscriptions: delivery to this node), and the room history."""

    async def current_seq(self, live_id: str) -> int: ...

    async def replay(self, live_id: str, since: int) -> Replay:
        """Held events with seq > since, or recovered=False if one of them is gone."""
        ...

    async def trim(self) -> None:
        """Drop held events older than the history age (the sweeper calls this)."""
        ...

    async def close(self) -> None: ...


# --- a backend: both, its clock, and what starting and stopping it takes --------------------


async def _nothing() -> None:
    return None


async def _own_secret(name: str, value: str) -> str:
    return value  # one process: its own random secret is the only one


@dataclass
class Backend:
    """A store and its broker, the clock they keep, and their lifetime."""

    store: Store
    broker: Broker
    clock: Clock
    start: Callable[[], Awaitable[None]] = _nothing  # returns once the backend answers
    close: Callable[[], Awaitable[None]] = _nothing
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # (name, this node's random value) -> the value every node uses (the first node's)
    share_secret: Callable[[str, str], Awaitable[str]] = _own_secret
    redis: Any = None  # the Redis client, for what else is shared through it (media pins)
