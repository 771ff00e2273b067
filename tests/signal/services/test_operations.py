"""The operation table (livesignal/signal/services/operations.py) checks in the order of
PROTOCOL §3.1: 400, then 404, then 403, then 601.

Every operation is called straight through the table, without HTTP or sockets, with each of its
bad or missing parameters while the ids it names point at something that does not exist, that
the caller may not touch, or whose state refuses the call: the answer is 400 every time,
whatever the lookup would have said. The same calls with good parameters show the order of the
rest: an unknown room or relay is 404 even for an outsider, an outsider acting on an ended room
or a finished relay is 403, and its own anchor is told 601.

How REST and sockets carry these errors to a client is tested once, in
tests/contract/test_rest.py (test_each_kind_of_error_reaches_rest_and_sockets_alike).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from livesignal.app import create_app
from livesignal.http.appkeys import SERVICES
from livesignal.signal.model.auth import Identity
from livesignal.signal.model.clock import ManualClock
from livesignal.signal.model.errors import ApiError
from livesignal.signal.model.events import RoomEvent
from livesignal.signal.model.params import Params
from livesignal.signal.services.operations import OPERATIONS, AttachAction, Call
from livesignal.signal.services.presence import Joined
from livesignal.signal.services.wiring import Services
from tests.conftest import make_settings

MISSING = object()  # a parameter left out of the call

# What the ids of a call name (Row.ids maps a parameter to one of these kinds).
UNKNOWN = "unknown"  # nothing: a room, relay or user that does not exist
ENDED = "ended"  # alice's ended room; the relay bob rejected (final); user alice

NOT_TEXT: list[Any] = [5, 1.5, True, ["x"], {"a": "b"}]
REQUIRED_TEXT: list[Any] = [MISSING, None, "", *NOT_TEXT]
OPTIONAL_TEXT: list[Any] = NOT_TEXT
STRING_MAP: list[Any] = [{"a": 1}, {"a": None}, ["a"], "a=1", 5, True]
REQUIRED_STRING_MAP: list[Any] = [MISSING, *STRING_MAP]
TIMES: list[Any] = [
    "2021-12-02T11:11:11",
    "2021/12/02 11:11:11",
    "2021-13-02 11:11:11",
    "2021-12-2 1:1:1",
    "soon",
    "1656315406",
    1.5,
    True,
    -5,
    [1],
]
PAGE_VALUES: list[Any] = [
    "0",
    "-1",
    "abc",
    "1.5",
    "2e1",
    "²",
    "--5",
    "٣",
    "9" * 5000,
    0,
    -20,
    1.5,
    True,
]
ID_LISTS: list[Any] = [MISSING, "", " , ", 5, [1], ["a", 2], ",".join(f"u{i}" for i in range(101))]
IM_ID_LISTS: list[Any] = [MISSING, "", "x", "1.5", "-1", "1" * 19, [1]]


def bad(name: str, values: list[Any]) -> list[dict[str, Any]]:
    return [{name: value} for value in values]


PAGING = bad("page_num", PAGE_VALUES) + bad("page_size", PAGE_VALUES)


@dataclass(frozen=True)
class Outcome:
    """A call with good parameters naming `kind` things, made by `caller`, answers `code`."""

    kind: str
    caller: str
    code: int


@dataclass(frozen=True)
class Row:
    valid: dict[str, Any] = field(default_factory=dict)
    # parameter -> what it names: "room", "relay", "user" (of the outcome's kind), "live_room"
    ids: dict[str, str] = field(default_factory=dict)
    bad: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def not_found(*more: Outcome) -> list[Outcome]:
    return [Outcome(UNKNOWN, "mallory", 404), *more]


ROOM = {"live_id": "room"}
RELAY = {"relay_id": "relay"}
# An outsider on an ended room or a finished relay: 403 before 601.
OUTSIDER = Outcome(ENDED, "mallory", 403)

TABLE: dict[str, Row] = {
    "room.create": Row(
        valid={"title": "t"},
        bad=bad("title", [*REQUIRED_TEXT, "t" * 201])
        + bad("notice", OPTIONAL_TEXT)
        + bad("cover_url", OPTIONAL_TEXT)
        + bad("extends", STRING_MAP)
        + bad("start_at", TIMES)
        + bad("end_at", TIMES)
        + bad("publish_expire_at", TIMES),
    ),
    "room.info": Row(ids=ROOM, bad=bad("live_id", REQUIRED_TEXT), outcomes=not_found()),
    "room.start": Row(
        ids=ROOM,
        bad=bad("live_id", REQUIRED_TEXT),
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "alice", 601)),
    ),
    "room.stop": Row(
        ids=ROOM,
        bad=bad("live_id", REQUIRED_TEXT),
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "alice", 601)),
    ),
    "room.delete": Row(ids=ROOM, bad=bad("live_id", REQUIRED_TEXT), outcomes=not_found(OUTSIDER)),
    "room.search": Row(bad=bad("keyword", OPTIONAL_TEXT) + PAGING),
    "room.list": Row(bad=PAGING),
    "room.anchor_list": Row(bad=PAGING),
    "room.join": Row(
        ids=ROOM,
        bad=bad("live_id", REQUIRED_TEXT),
        outcomes=not_found(Outcome(ENDED, "mallory", 601)),
    ),
    "room.leave": Row(ids=ROOM, bad=bad("live_id", REQUIRED_TEXT), outcomes=not_found()),
    "room.heartbeat": Row(ids=ROOM, bad=bad("live_id", REQUIRED_TEXT), outcomes=not_found()),
    "room.extends": Row(
        ids=ROOM,
        valid={"extends": {"k": "v"}},
        bad=bad("live_id", REQUIRED_TEXT) + bad("extends", REQUIRED_STRING_MAP),
        outcomes=not_found(OUTSIDER),
    ),
    "room.user_list": Row(
        ids=ROOM, bad=bad("live_id", REQUIRED_TEXT) + PAGING, outcomes=not_found()
    ),
    "relay.start": Row(
        ids={"init_room_id": "room", "recv_room_id": "live_room"},
        valid={"recv_user_id": "bob"},
        bad=bad("init_room_id", REQUIRED_TEXT)
        + bad("recv_room_id", REQUIRED_TEXT)
        + bad("recv_user_id", REQUIRED_TEXT),
        # alice's own room has ended: a relay needs both rooms live.
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "alice", 601)),
    ),
    "relay.info": Row(ids=RELAY, bad=bad("relay_id", REQUIRED_TEXT), outcomes=not_found()),
    "relay.token": Row(
        ids=RELAY,
        bad=bad("relay_id", REQUIRED_TEXT),
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "alice", 601)),
    ),
    "relay.accept": Row(
        ids=RELAY,
        bad=bad("relay_id", REQUIRED_TEXT),
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "bob", 601)),
    ),
    "relay.reject": Row(
        ids=RELAY,
        bad=bad("relay_id", REQUIRED_TEXT) + bad("reason", OPTIONAL_TEXT),
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "bob", 601)),
    ),
    "relay.cancel": Row(
        ids=RELAY,
        bad=bad("relay_id", REQUIRED_TEXT),
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "alice", 601)),
    ),
    "relay.pending": Row(),
    "relay.started": Row(
        ids=RELAY,
        bad=bad("relay_id", REQUIRED_TEXT),
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "alice", 601)),
    ),
    "relay.stop": Row(
        ids=RELAY,
        bad=bad("relay_id", REQUIRED_TEXT),
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "bob", 601)),
    ),
    "relay.extends": Row(
        ids=RELAY,
        valid={"extends": {"k": "v"}},
        bad=bad("relay_id", REQUIRED_TEXT) + bad("extends", REQUIRED_STRING_MAP),
        outcomes=not_found(OUTSIDER, Outcome(ENDED, "alice", 601)),
    ),
    "user.profile": Row(),
    "user.update": Row(
        bad=bad("nick", OPTIONAL_TEXT) + bad("avatar", OPTIONAL_TEXT) + bad("extends", STRING_MAP)
    ),
    "user.get": Row(
        ids={"user_id": "user"}, bad=bad("user_id", REQUIRED_TEXT), outcomes=not_found()
    ),
    "user.list": Row(bad=bad("user_ids", ID_LISTS)),
    "user.imusers": Row(bad=bad("im_user_ids", IM_ID_LISTS)),
    "app.config": Row(),
    # Socket operations, called with a socket (SocketTaker below): a resume of an ended room
    # fails at its join (601); a since the room never reached is 400 only once the room exists.
    "room.resume": Row(
        ids=ROOM,
        valid={"since": 0},
        bad=bad("live_id", REQUIRED_TEXT) + bad("since", [MISSING, None, -1, "abc", 1.5, True]),
        outcomes=not_found(Outcome(ENDED, "mallory", 601)),
    ),
    "auth.refresh": Row(bad=bad("token", REQUIRED_TEXT)),
    "chat.send": Row(
        ids=ROOM,
        valid={"text": "hi"},
        bad=bad("live_id", REQUIRED_TEXT) + bad("text", REQUIRED_TEXT),
        # not a present member of that room: an outsider (no 601: chat has no state to refuse)
        outcomes=not_found(OUTSIDER),
    ),
}


# Operations that act on the calling socket: called with one, as the socket transport does.
SOCKET_OPERATIONS = {"room.resume", "auth.refresh"}


class SocketTaker:
    """A socket as an operation sees it (services/operations.py's SocketControl)."""

    async def attach(self, live_id: str, action: AttachAction, *, joins: bool = True) -> Joined:
        return await action("none")

    def deliver_history(self, events: list[RoomEvent], seq: int) -> None:
        return None

    def reidentify(self, identity: Identity) -> None:
        return None


@dataclass
class World:
    """alice's room has ended; bob's room is live; the relay alice offered bob, he rejected."""

    services: Services
    names: dict[str, dict[str, str]]  # outcome kind -> what a parameter names -> the id

    def params(self, row: Row, kind: str, override: Mapping[str, Any] = {}) -> dict[str, Any]:
        ids = {name: self.names[kind][what] for name, what in row.ids.items()}
        return {**row.valid, **ids, **override}

    async def code_of(self, operation: str, caller: str, params: Mapping[str, Any]) -> int:
        """The error code the operation answers (0 for success)."""
        sent = {name: value for name, value in params.items() if value is not MISSING}
        socket = SocketTaker() if operation in SOCKET_OPERATIONS else None
        call = Call(Identity(caller), Params(sent), socket=socket)
        try:
            await OPERATIONS[operation](self.services, call)
        except ApiError as error:
            return error.code
        return 0


async def call_ok(services: Services, operation: str, caller: str, **params: Any) -> Any:
    return await OPERATIONS[operation](services, Call(Identity(caller), Params(params)))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    app = create_app(make_settings(), clock=ManualClock(), run_sweeper=False)
    services = app[SERVICES]
    for user in ("alice", "bob", "mallory"):
        await services.users.ensure(user)  # as the transports do for every caller
    room_a = (await call_ok(services, "room.create", "alice", title="a"))["live_id"]
    await call_ok(services, "room.start", "alice", live_id=room_a)
    room_b = (await call_ok(services, "room.create", "bob", title="b"))["live_id"]
    await call_ok(services, "room.start", "bob", live_id=room_b)
    relay = await call_ok(
        services,
        "relay.start",
        "alice",
        init_room_id=room_a,
        recv_room_id=room_b,
        recv_user_id="bob",
    )
    await call_ok(services, "relay.reject", "bob", relay_id=relay["relay_id"])
    await call_ok(services, "room.stop", "alice", live_id=room_a)
    names = {
        UNKNOWN: {"room": "live_nope", "relay": "relay_nope", "user": "nobody"},
        ENDED: {"room": room_a, "relay": relay["relay_id"], "user": "alice"},
    }
    for named in names.values():
        named["live_room"] = room_b
    yield World(services, names)
    await services.close()


async def snapshot(world: World) -> list[Any]:
    """What the calls of a test could have changed: the rooms, the relay, alice's profile."""
    services = world.services
    ended, live = world.names[ENDED], world.names[UNKNOWN]["live_room"]
    return [
        await call_ok(services, "room.info", "alice", live_id=ended["room"]),
        await call_ok(services, "room.info", "bob", live_id=live),
        await call_ok(services, "room.search", "alice"),
        await call_ok(services, "room.user_list", "alice", live_id=ended["room"]),
        await call_ok(services, "relay.info", "alice", relay_id=ended["relay"]),
        await call_ok(services, "user.profile", "alice"),
    ]


def test_every_operation_has_a_row() -> None:
    assert set(TABLE) == set(OPERATIONS)


async def test_socket_operations_need_a_socket(world: World) -> None:
    """Over REST there is no socket to attach or renew: such a call is refused, not run."""
    for operation in SOCKET_OPERATIONS:
        call = Call(Identity("alice"), Params({"live_id": "x", "since": 0, "token": "t"}))
        with pytest.raises(ApiError) as refused:
            await OPERATIONS[operation](world.services, call)
        assert refused.value.code == 400


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_bad_parameters_are_400_before_404_403_and_601(operation: str, world: World) -> None:
    row = TABLE[operation]
    before = await snapshot(world)
    # Good parameters: 404 before 403 before 601.
    for outcome in row.outcomes:
        code = await world.code_of(operation, outcome.caller, world.params(row, outcome.kind))
        assert code == outcome.code, (operation, outcome)
    # Each bad parameter: 400, wherever the good ones would have led.
    for override in row.bad:
        for outcome in row.outcomes or [Outcome(ENDED, "alice", 0)]:
            params = world.params(row, outcome.kind, override)
            assert await world.code_of(operation, outcome.caller, params) == 400, (
                operation,
                override,
                outcome,
            )
    # Refused calls leave no trace.
    assert await snapshot(world) == before
