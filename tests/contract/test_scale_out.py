"""PROTOCOL §5 end to end: several real `livesignal serve` processes sharing one real Redis.

Every test starts its own nodes (`make_cluster`, store.backend "redis") and talks to them the
way users do: WebSockets (SignalClient) and REST calls, each aimed at a chosen node, so that a
call on one node has to reach sockets on another. Presence is fast (tests/cluster.py: heartbeat
0.5 s, 2 missed = 1 s) unless a test needs REST presence to outlast it. Waits are bounded.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest

from livesignal.client import ConnectionLost, SignalClient, SignalError
from tests.cluster import ClusterFactory, Node, Overrides
from tests.conftest import Reply, live_room
from tests.redis_server import RedisServer

INTERVAL = 0.5  # presence.heartbeat_interval of tests/cluster.py
TIMEOUT = 1.0  # interval * missed_heartbeats (2)
# REST presence long enough that an anchor or viewer held by REST stays for the whole test.
SLOW_PRESENCE: Overrides = {"presence": {"heartbeat_interval": 5.0, "missed_heartbeats": 3}}
EVENT_WAIT = 5.0  # seconds any one expected event may take
REDIS_BACK = 10.0  # seconds the nodes get to find a restarted Redis again

Event = dict[str, Any]


# --- nodes, REST and sockets ----------------------------------------------------------------------


async def redis_nodes(
    make_cluster: ClusterFactory,
    redis_url: str,
    n: int,
    overrides: Overrides | None = None,
    args: Sequence[str] = (),
) -> list[Node]:
    cluster = await make_cluster(n, overrides, redis_url=redis_url, args=args)
    return list(cluster.nodes)


class Rest:
    """REST calls as a named user, each sent to the node the test picks."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._tokens: dict[tuple[int, str], str] = {}

    def token(self, node: Node, user: str) -> str:
        key = (node.port, user)
        if key not in self._tokens:
            self._tokens[key] = node.token(user)
        return self._tokens[key]

    async def call(
        self,
        node: Node,
        method: str,
        path: str,
        user: str = "observer",
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        headers = {"Authorization": self.token(node, user)}
        async with self.session.request(
            method, node.base_url + path, json=json, params=params, headers=headers
        ) as response:
            body = await response.json(content_type=None)
            return Reply(response.status, body, dict(response.headers))

    async def ok(
        self, node: Node, method: str, path: str, user: str = "observer", **kw: Any
    ) -> Any:
        reply = await self.call(node, method, path, user, **kw)
        assert (reply.status, reply.code) == (200, 0), (node.name, method, path, reply.body)
        return reply.data

    # The few calls the tests make again and again.
    async def live_room(self, node: Node, anchor: str) -> str:
        room = await self.ok(
            node, "POST", "/client/live/room/instance", anchor, json={"title": "t"}
        )
        live_id: str = room["live_id"]
        await self.ok(node, "PUT", f"/client/live/room/{live_id}", anchor)
        return live_id

    async def join(self, node: Node, user: str, live_id: str) -> Reply:
        return await self.call(node, "POST", f"/client/live/room/user/{live_id}", user)

    async def room(self, node: Node, live_id: str) -> dict[str, Any]:
        room: dict[str, Any] = await self.ok(node, "GET", f"/client/live/room/info/{live_id}")
        return room

    async def user_ids(self, node: Node, live_id: str) -> list[str]:
        params = {"live_id": live_id, "page_size": "100"}
        page = await self.ok(node, "GET", "/client/live/room/user_list", params=params)
        return [user["user_id"] for user in page["list"]]

    async def relay(self, node: Node, relay_id: str) -> dict[str, Any]:
        relay: dict[str, Any] = await self.ok(node, "GET", f"/client/relay/{relay_id}")
        return relay


@pytest.fixture
async def rest() -> AsyncIterator[Rest]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield Rest(session)


Connect = Callable[[Node, str], Awaitable[SignalClient]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """connect(node, user) -> a SignalClient on that node's /ws, closed at teardown."""
    clients: list[SignalClient] = []

    async def open_socket(node: Node, user: str) -> SignalClient:
        client = await SignalClient.connect(node.ws_url, node.token(user))
        clients.append(client)
        return client

    yield open_socket
    for client in clients:
        await client.close()


# --- events ---------------------------------------------------------------------------------------
#
# SignalClient.next_event(name) drops the events it skips. These helpers keep them instead, in a
# backlog per client read before the socket's queue, so that waiting for a user-directed event
# (relay.invited) never loses room events a later check counts.

_backlog: weakref.WeakKeyDictionary[SignalClient, list[Event]] = weakref.WeakKeyDictionary()


async def next_event(client: SignalClient, timeout: float = EVENT_WAIT) -> Event:
    backlog = _backlog.setdefault(client, [])
    if backlog:
        return backlog.pop(0)
    return await client.next_event(timeout=timeout)


async def wait_event(client: SignalClient, name: str, timeout: float = EVENT_WAIT) -> Event:
    """The first event called `name`; the events before it stay to be read."""
    backlog = _backlog.setdefault(client, [])
    for index, event in enumerate(backlog):
        if event["event"] == name:
            return backlog.pop(index)
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event(timeout=timeout)
            if event["event"] == name:
                return event
            backlog.append(event)


def received_by_now(client: SignalClient, live_id: str) -> list[Event]:
    """The room's events this client has received and nobody read yet, without waiting."""
    events = _backlog.pop(client, []) + client.pending_events()
    return [event for event in events if event.get("live_id") == live_id]


async def room_events_until(
    client: SignalClient,
    live_id: str,
    last: Callable[[Event], bool],
    timeout: float = EVENT_WAIT,
    received: list[Event] | None = None,
) -> list[Event]:
    """The room's events up to and including the first one `last` accepts, appended to
    `received` (the caller keeps what came even when the wait times out). User-directed
    events on the way are dropped."""
    received = [] if received is None else received
    async with asyncio.timeout(timeout):
        while True:
            event = await next_event(client, timeout)
            if event.get("live_id") != live_id:
                continue
            received.append(event)
            if last(event):
                return received


async def room_events_covering(
    client: SignalClient,
    live_id: str,
    wanted: list[Callable[[Event], bool]],
    deadline: float,
) -> list[Event]:
    """The room's events until each of `wanted` matched one; fails at `deadline` (monotonic)."""
    received: list[Event] = []
    for match in wanted:
        if not any(match(event) for event in received):
            left = max(deadline - time.monotonic(), 0.001)
            try:
                await room_events_until(client, live_id, match, left, received)
            except TimeoutError:
                raise AssertionError(f"missing by the deadline; got {essence(received)}") from None
    return received


def is_chat(text: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "chat.message" and e["data"]["text"] == text


def is_joined(user_id: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "member.joined" and e["data"]["user"]["user_id"] == user_id


def left(user_id: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "member.left" and e["data"]["user_id"] == user_id


def is_pk(status: int) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "pk.state" and e["data"]["relay"]["status"] == status


def assert_gapless(received: list[Event], after: int, who: str = "") -> None:
    """The seqs run after+1, after+2, ... : no gap, no repeat, no reordering."""
    seqs = [event["seq"] for event in received]
    assert seqs == list(range(after + 1, after + 1 + len(seqs))), (who, after, seqs)


def pk_statuses(received: list[Event]) -> list[int]:
    return [e["data"]["relay"]["status"] for e in received if e["event"] == "pk.state"]


def essence(received: list[Event]) -> list[tuple[int, str, Any]]:
    """What a user sees of a room event; `ts` of chat messages included."""
    return [(e["seq"], e["event"], e["data"]) for e in received]


async def until_not_503(call: Callable[[], Awaitable[Any]], deadline: float = REDIS_BACK) -> Any:
    """A socket op repeated while it answers 503 (as PROTOCOL §3.1 allows a client to)."""
    until = time.monotonic() + deadline
    while True:
        try:
            return await call()
        except SignalError as error:
            if error.code != 503 or time.monotonic() > until:
                raise
        await asyncio.sleep(0.1)


async def event_or_resume(
    client: SignalClient, live_id: str, match: Callable[[Event], bool]
) -> list[Event]:
    """The room's events up to the one `match` accepts; if the server closes the socket with
    1012 on the way (PROTOCOL §5), the client reconnects to the same node and resumes."""
    received: list[Event] = []
    try:
        await room_events_until(client, live_id, match, received=received)
    except ConnectionLost:
        assert client.close_code == 1012, client.close_code
        resumed = await client.reconnect()
        assert resumed is not None and resumed["recovered"], resumed
        await room_events_until(client, live_id, match, received=received)
    except TimeoutError:
        raise AssertionError(
            f"socket open (close code {client.close_code}) but no new event: {essence(received)}"
        ) from None
    return received


async def kill(node: Node) -> float:
    """SIGKILL the node; the monotonic time by which PROTOCOL §5 wants its members gone:
    interval * missed + one interval, plus 0.5 s for scheduling on a busy machine."""
    killed_at = time.monotonic()
    assert await node.sigkill() == -9
    return killed_at + TIMEOUT + INTERVAL + 0.5


async def start_relay(alice: SignalClient, bob: SignalClient, room_a: str, room_b: str) -> str:
    """alice (room_a) invites bob (room_b), bob accepts: status 1. The relay id."""
    started = await alice.request(
        "relay.start", init_room_id=room_a, recv_room_id=room_b, recv_user_id="bob"
    )
    relay_id: str = started["relay_id"]
    await wait_event(bob, "relay.invited")
    accepted = await bob.request("relay.accept", relay_id=relay_id)
    assert accepted["relay_status"] == 1
    return relay_id


# --- 1. an invitation crosses nodes ---------------------------------------------------------------


async def test_a_rest_invitation_on_one_node_reaches_and_is_accepted_on_another(
    make_cluster: ClusterFactory, redis_url: str, rest: Rest, connect: Connect
) -> None:
    a, b = await redis_nodes(make_cluster, redis_url, 2, SLOW_PRESENCE)
    room_a = await rest.live_room(a, "alice")
    alice = await connect(a, "alice")  # alice's socket for her user-directed events
    bob = await connect(b, "bob")
    room_b = await live_room(bob)

    started = await rest.ok(
        a,
        "POST",
        "/client/relay/start",
        "alice",
        json={"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": "bob"},
    )
    assert started["relay_status"] == 0
    relay_id = started["relay_id"]

    invited = await wait_event(bob, "relay.invited")
    assert invited["data"]["relay"]["sid"] == relay_id
    assert invited["data"]["relay"]["init_user_id"] == "alice"
    accepted = await bob.request("relay.accept", relay_id=relay_id)
    assert accepted["relay_status"] == 1 and accepted["relay_token"]

    for anchor in (alice, bob):
        event = await wait_event(anchor, "relay.accepted")
        assert event["data"]["relay"]["sid"] == relay_id
        assert event["data"]["relay"]["status"] == 1
    assert (await rest.relay(a, relay_id))["status"] == 1
    assert (await rest.room(a, room_a))["pk_id"] == relay_id


# --- 2. pk.state over three nodes, in seq order ---------------------------------------------------


async def test_pk_state_reaches_both_rooms_on_every_node_gapless_and_in_order(
    make_cluster: ClusterFactory, redis_url: str, rest: Rest, connect: Connect
) -> None:
    a, b, c = await redis_nodes(make_cluster, redis_url, 3)
    alice, bob = await connect(a, "alice"), await connect(b, "bob")
    room_a, room_b = await live_room(alice), await live_room(bob)
    # member -> (room, the seq its join/start reply reported)
    members: dict[SignalClient, tuple[str, int, str]] = {
        alice: (room_a, alice.last_seq[room_a], "alice"),
        bob: (room_b, bob.last_seq[room_b], "bob"),
    }
    for room, tag in ((room_a, "a"), (room_b, "b")):
        for node in (a, b, c):
            name = f"v{tag}-{node.name}"
            viewer = await connect(node, name)
            joined = await viewer.request("room.join", live_id=room)
            members[viewer] = (room, joined["seq"], name)
    viewers = [client for client in members if client not in (alice, bob)]

    async def chatter(viewer: SignalClient) -> None:
        room = members[viewer][0]
        for index in range(3):
            await viewer.request("chat.send", live_id=room, text=f"hi {index}")

    async def pk() -> None:
        relay_id = await start_relay(alice, bob, room_a, room_b)
        score = {"extends": {"score": "1:0"}}
        await rest.ok(b, "POST", f"/client/relay/{relay_id}/extends", "alice", json=score)
        await bob.request("relay.started", relay_id=relay_id)
        await rest.ok(c, "POST", f"/client/relay/{relay_id}/started", "alice")
        await rest.ok(a, "POST", f"/client/relay/{relay_id}/stop", "bob")

    # Chat on every node while the PK runs: the rooms' seqs interleave both kinds of change.
    await asyncio.gather(pk(), *(chatter(viewer) for viewer in viewers))
    await alice.request("chat.send", live_id=room_a, text="done")
    await bob.request("chat.send", live_id=room_b, text="done")

    seen: dict[str, dict[int, tuple[str, Any]]] = {room_a: {}, room_b: {}}
    for client, (room, seq, name) in members.items():
        received = await room_events_until(client, room, is_chat("done"))
        assert_gapless(received, seq, name)
        assert pk_statuses(received) == [1, 1, 3, 4, 6], name
        for event in received:  # every member of a room saw the same event at each seq
            entry = (event["event"], event["data"])
            assert seen[room].setdefault(event["seq"], entry) == entry, (name, event)
        chats = [
            e for e in received if e["event"] == "chat.message" and e["data"]["text"] != "done"
        ]
        assert len(chats) == 9, (name, chats)  # 3 viewers of the room, 3 lines each


# --- 3. concurrent `started` from two nodes -------------------------------------------------------


async def test_concurrent_started_reports_on_two_nodes_end_at_4_for_every_member(
    make_cluster: ClusterFactory, redis_url: str, rest: Rest, connect: Connect
) -> None:
    a, b = await redis_nodes(make_cluster, redis_url, 2)
    alice, bob = await connect(a, "alice"), await connect(b, "bob")
    room_a, room_b = await live_room(alice), await live_room(bob)
    viewer_a, viewer_b = await connect(b, "va"), await connect(a, "vb")
    await viewer_a.request("room.join", live_id=room_a)
    await viewer_b.request("room.join", live_id=room_b)
    members = {alice: room_a, bob: room_b, viewer_a: room_a, viewer_b: room_b}

    for _ in range(3):  # a few rounds: either report may win the race
        relay_id = await start_relay(alice, bob, room_a, room_b)
        replies = await asyncio.gather(
            rest.call(a, "POST", f"/client/relay/{relay_id}/started", "alice"),
            rest.call(b, "POST", f"/client/relay/{relay_id}/started", "bob"),
        )
        assert [(r.status, r.code) for r in replies] == [(200, 0), (200, 0)], replies
        assert (await rest.relay(b, relay_id))["status"] == 4
        for client, room in members.items():
            received = await room_events_until(client, room, is_pk(4))
            statuses = pk_statuses(received)
            assert statuses[0] == 1 and statuses[-1] == 4, statuses
            assert statuses == sorted(statuses) and len(set(statuses)) == len(statuses), statuses
            assert set(statuses) in ({1, 2, 4}, {1, 3, 4}), statuses

        await alice.request("relay.stop", relay_id=relay_id)
        for client, room in members.items():
            received = await room_events_until(client, room, lambda e: e["event"] == "pk.state")
            assert pk_statuses(received) == [6], "nothing after 4 but the stop"


# --- 4. 200 concurrent joins over three nodes -----------------------------------------------------


async def test_concurrent_rest_joins_leave_each_user_in_exactly_one_room(
    make_cluster: ClusterFactory, redis_url: str, rest: Rest
) -> None:
    nodes = await redis_nodes(make_cluster, redis_url, 3, SLOW_PRESENCE)
    anchors = [f"anchor{index}" for index in range(10)]
    rooms = await asyncio.gather(
        *(rest.live_room(nodes[index % 3], anchor) for index, anchor in enumerate(anchors))
    )
    users = [f"user{index}" for index in range(20)]
    rng = random.Random(8)
    joins = []
    for user in users:
        for live_id in rng.sample(rooms, len(rooms)):
            joins.append(rest.join(rng.choice(nodes), user, live_id))
    rng.shuffle(joins)
    replies = await asyncio.gather(*joins)
    assert Counter((r.status, r.code) for r in replies) == {(200, 0): 200}

    where: Counter[str] = Counter()
    for live_id, anchor in zip(rooms, anchors, strict=True):
        for node in nodes:
            present = await rest.user_ids(node, live_id)
            assert len(present) == len(set(present)), present
            assert anchor in present
            assert (await rest.room(node, live_id))["online_count"] == len(present), node.name
        where.update(user for user in present if user in users)
    assert where == {user: 1 for user in users}, where
    total = sum([(await rest.room(nodes[0], live_id))["online_count"] for live_id in rooms])
    assert total == len(users) + len(anchors)


# --- 5. a node killed with SIGKILL ----------------------------------------------------------------


async def test_members_held_by_a_killed_node_leave_once_by_timeout(
    make_cluster: ClusterFactory, redis_url: str, rest: Rest, connect: Connect
) -> None:
    doomed, b, c = await redis_nodes(make_cluster, redis_url, 3)
    alice = await connect(doomed, "alice")
    live_id = await live_room(alice)  # the anchor is held by her socket on the doomed node only
    watchers = {}
    for node in (b, c):
        watcher = await connect(node, f"watcher-{node.name}")
        watchers[watcher] = (await watcher.request("room.join", live_id=live_id))["seq"]
    viewer = await connect(doomed, "viewer")
    await viewer.request("room.join", live_id=live_id)
    for node in (doomed, b):  # one user with a socket on the doomed node and one on b
        dual = await connect(node, "dual")
        await dual.request("room.join", live_id=live_id)
    assert (await rest.room(b, live_id))["online_count"] == 5  # alice, 2 watchers, viewer, dual
    # Every node has served for a heartbeat interval: a node killed within its first moments
    # is the next test's case.
    await asyncio.sleep(INTERVAL)

    deadline = await kill(doomed)
    wanted = [left("viewer"), left("alice"), lambda e: e["event"] == "anchor.offline"]
    received: dict[SignalClient, list[Event]] = {}
    for watcher in watchers:
        received[watcher] = await room_events_covering(watcher, live_id, wanted, deadline)
    await asyncio.sleep(INTERVAL + 0.25)  # one more interval and sweep: no repeat, no other
    for watcher, seq in watchers.items():
        events = received[watcher] + received_by_now(watcher, live_id)
        assert_gapless(events, seq, "watcher")
        departures = [
            (e["event"], e["data"].get("user_id"), e["data"].get("reason"))
            for e in events
            if e["event"] in ("member.left", "anchor.offline")
        ]
        assert Counter(departures) == {
            ("member.left", "viewer", "timeout"): 1,
            ("member.left", "alice", "timeout"): 1,
            ("anchor.offline", "alice", None): 1,
        }, departures
    assert sorted(await rest.user_ids(c, live_id)) == ["dual", "watcher-node1", "watcher-node2"]
    room = await rest.room(b, live_id)
    assert (room["anchor_status"], room["online_count"], room["live_status"]) == (0, 3, 1)


async def test_a_node_killed_right_after_it_started_loses_its_members_too(
    make_cluster: ClusterFactory, redis_url: str, rest: Rest, connect: Connect
) -> None:
    cluster = await make_cluster(1, redis_url=redis_url)
    watcher = await connect(cluster[0], "watcher")
    (doomed,) = await cluster.start(1)  # a node that has just started (a restart, a scale-up)
    alice = await connect(doomed, "alice")
    live_id = await live_room(alice)
    seq = (await watcher.request("room.join", live_id=live_id))["seq"]

    deadline = await kill(doomed)
    wanted = [left("alice"), lambda e: e["event"] == "anchor.offline"]
    received = await room_events_covering(watcher, live_id, wanted, deadline)
    assert_gapless(received, seq, "watcher")
    assert (await rest.room(cluster[0], live_id))["anchor_status"] == 0


# --- 6. a Redis restart (AOF) loses nothing -------------------------------------------------------


async def test_a_redis_restart_with_aof_loses_no_room_relay_user_or_history(
    make_cluster: ClusterFactory, own_redis: RedisServer, rest: Rest, connect: Connect
) -> None:
    a, b = await redis_nodes(make_cluster, own_redis.url, 2, SLOW_PRESENCE)
    room_a, room_b = await rest.live_room(a, "alice"), await rest.live_room(b, "bob")
    viewer = await connect(a, "viewer")
    since = (await viewer.request("room.join", live_id=room_a))["seq"]
    profile = {"nick": "Alice", "avatar": "https://example.com/a.png", "extends": {"k": "v"}}
    await rest.ok(b, "PUT", "/client/user/user", "alice", json=profile)
    body = {"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": "bob"}
    relay_id = (await rest.ok(a, "POST", "/client/relay/start", "alice", json=body))["relay_id"]
    await rest.ok(b, "POST", f"/client/relay/{relay_id}/accept", "bob")
    score = {"extends": {"score": "2:1"}}
    await rest.ok(a, "POST", f"/client/relay/{relay_id}/extends", "alice", json=score)
    await viewer.request("chat.send", live_id=room_a, text="before the restart")
    topic = {"live_id": room_a, "extends": {"topic": "aof"}}
    await rest.ok(b, "PUT", "/client/live/room/extends", "alice", json=topic)
    history = await room_events_until(viewer, room_a, lambda e: e["event"] == "room.extends")
    assert [e["event"] for e in history] == ["pk.state", "pk.state", "chat.message", "room.extends"]

    async def state(node: Node) -> list[Any]:
        return [
            await rest.room(node, room_a),
            await rest.room(node, room_b),
            await rest.relay(node, relay_id),
            await rest.ok(node, "GET", "/client/user/user/alice"),
            sorted(await rest.user_ids(node, room_a)),
        ]

    before = await state(b)
    assert await asyncio.to_thread(own_redis.stop) == 0
    await asyncio.to_thread(own_redis.start)
    for node in (a, b):
        await node.wait_for_status("/readyz", {200}, REDIS_BACK)

    assert await state(a) == before
    assert await state(b) == before
    late = await connect(b, "late")
    resumed = await until_not_503(lambda: late.request("room.resume", live_id=room_a, since=since))
    replayed = await room_events_until(late, room_a, is_joined("late"))
    assert essence(replayed[:-1]) == essence(history)  # the history survived, ts included
    assert_gapless(replayed, since, "late")
    assert resumed == {"recovered": True, "seq": replayed[-1]["seq"]}


# --- 7. Redis down: 503s, no crash, and back ------------------------------------------------------


async def test_redis_down_answers_503_keeps_sockets_and_members_and_recovers(
    make_cluster: ClusterFactory, own_redis: RedisServer, rest: Rest, connect: Connect
) -> None:
    a, b = await redis_nodes(make_cluster, own_redis.url, 2)
    alice = await connect(a, "alice")
    live_id = await live_room(alice)
    alice_seq = alice.last_seq[live_id]  # as her start reply reported it
    viewer = await connect(b, "viewer")
    seq = (await viewer.request("room.join", live_id=live_id))["seq"]
    await asyncio.sleep(INTERVAL)  # the nodes have served a while (not just started)

    outage_began = time.monotonic()
    assert await asyncio.to_thread(own_redis.stop) == 0
    for reply in (
        await rest.call(a, "GET", f"/client/live/room/info/{live_id}"),
        await rest.join(b, "walker", live_id),
    ):
        assert (reply.status, reply.code) == (503, 503), reply.body
    for op, data in (
        ("room.info", {"live_id": live_id}),
        ("chat.send", {"live_id": live_id, "text": "anyone there?"}),
    ):
        with pytest.raises(SignalError) as failed:
            await viewer.request(op, **data)
        assert failed.value.code == 503
    assert viewer.close_code is None  # the socket stays open
    for node in (a, b):
        assert (await node.status("/readyz"), await node.status("/healthz")) == (503, 200)
        assert node.running
    # An outage of a few seconds, as a Redis restart or failover takes, and longer than a
    # presence timeout: every node's pub/sub reader has tried (and failed) to reconnect a few
    # times, and no node could renew its lease.
    await asyncio.sleep(max(0.0, outage_began + max(2.0, TIMEOUT + INTERVAL) - time.monotonic()))

    await asyncio.to_thread(own_redis.start)
    for node in (a, b):
        await node.wait_for_status("/readyz", {200}, REDIS_BACK)
    await asyncio.sleep(TIMEOUT + INTERVAL)  # every node sweeps a few times

    # Both sockets stayed open the whole time (their pings were answered): both members are
    # still present, and nobody was told otherwise.
    assert (alice.close_code, viewer.close_code) == (None, None)
    assert sorted(await rest.user_ids(a, live_id)) == ["alice", "viewer"]
    room = await rest.room(b, live_id)
    assert (room["live_status"], room["anchor_status"], room["online_count"]) == (1, 1, 2)
    assert essence(received_by_now(viewer, live_id)) == [], "no member.left / anchor.offline"

    # Each socket (alice's on a, the viewer's on b) gets the next room event, or was closed
    # with 1012 and resumes on its node; the chat refused with 503 was never sent.
    assert (await rest.join(b, "walker", live_id)).code == 0
    for client, since, who in ((viewer, seq, "viewer"), (alice, alice_seq, "alice")):
        received = await event_or_resume(client, live_id, is_joined("walker"))
        assert_gapless(received, since, who)
        assert all(e["event"] != "chat.message" for e in received), "a 503 chat was not sent"


# --- 8. resume on another node --------------------------------------------------------------------


async def test_resume_on_another_node_replays_exactly_the_missed_events(
    make_cluster: ClusterFactory, redis_url: str, rest: Rest, connect: Connect
) -> None:
    a, b = await redis_nodes(make_cluster, redis_url, 2)
    alice = await connect(a, "alice")
    live_id = await live_room(alice)
    watcher = await connect(b, "watcher")
    await watcher.request("room.join", live_id=live_id)
    viewer = await connect(a, "viewer")
    await viewer.request("room.join", live_id=live_id)
    await alice.request("chat.send", live_id=live_id, text="seen")
    await room_events_until(viewer, live_id, is_chat("seen"))
    since = viewer.last_seq[live_id]
    await viewer.close()

    await alice.request("chat.send", live_id=live_id, text="missed 1")
    assert (await rest.join(b, "newcomer", live_id)).code == 0
    topic = {"live_id": live_id, "extends": {"topic": "resume"}}
    await rest.ok(a, "PUT", "/client/live/room/extends", "alice", json=topic)
    await alice.request("chat.send", live_id=live_id, text="missed 2")
    watched = await room_events_until(watcher, live_id, is_chat("missed 2"))
    missed = [event for event in watched if event["seq"] > since]
    assert [e["event"] for e in missed] == [
        "member.left",  # the viewer's own leave, when its socket closed
        "chat.message",
        "member.joined",
        "room.extends",
        "chat.message",
    ]

    back = await connect(b, "viewer")
    resumed = await back.request("room.resume", live_id=live_id, since=since)
    replayed = await room_events_until(back, live_id, is_joined("viewer"))
    rejoined = await room_events_until(watcher, live_id, is_joined("viewer"))
    assert essence(replayed) == essence(missed + rejoined)
    assert resumed == {"recovered": True, "seq": replayed[-1]["seq"]}

    await alice.request("chat.send", live_id=live_id, text="after")
    after = await room_events_until(back, live_id, is_chat("after"))
    assert_gapless(after, resumed["seq"], "resumed viewer")
    assert len(after) == 1


# --- 9. `serve --workers 2` -----------------------------------------------------------------------


async def test_two_workers_on_one_port_serve_a_whole_show_with_a_pk(
    make_cluster: ClusterFactory, redis_url: str, rest: Rest, connect: Connect
) -> None:
    (node,) = await redis_nodes(make_cluster, redis_url, 1, args=("--workers", "2"))
    alice = await connect(node, "alice")
    room_a = await live_room(alice)  # create and start over a socket
    room_b = await rest.live_room(node, "bob")  # ... and over REST
    bob = await connect(node, "bob")
    members = {
        alice: (room_a, alice.last_seq[room_a], "alice"),
        bob: (room_b, (await bob.request("room.join", live_id=room_b))["seq"], "bob"),
    }
    for room, tag in ((room_a, "a"), (room_b, "b")):
        for index in range(2):  # each socket lands on either worker
            name = f"v{tag}{index}"
            viewer = await connect(node, name)
            members[viewer] = (room, (await viewer.request("room.join", live_id=room))["seq"], name)
    for room in (room_a, room_b):
        assert (await rest.room(node, room))["online_count"] == 3
    for client, (room, _, name) in members.items():
        await client.request("chat.send", live_id=room, text=f"hello from {name}")

    body = {"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": "bob"}
    relay_id = (await rest.ok(node, "POST", "/client/relay/start", "alice", json=body))["relay_id"]
    assert (await wait_event(bob, "relay.invited"))["data"]["relay"]["sid"] == relay_id
    assert (await bob.request("relay.accept", relay_id=relay_id))["relay_status"] == 1
    assert (await wait_event(alice, "relay.accepted"))["data"]["relay"]["sid"] == relay_id
    await rest.ok(node, "POST", f"/client/relay/{relay_id}/started", "alice")
    await bob.request("relay.started", relay_id=relay_id)
    await rest.ok(node, "POST", f"/client/relay/{relay_id}/stop", "bob")
    await alice.request("chat.send", live_id=room_a, text="done")
    await bob.request("chat.send", live_id=room_b, text="done")

    for client, (room, seq, name) in members.items():
        received = await room_events_until(client, room, is_chat("done"))
        assert_gapless(received, seq, name)
        assert pk_statuses(received) == [1, 2, 4, 6], name
        chats = [e["data"]["text"] for e in received if e["event"] == "chat.message"]
        speakers = [other for other, (in_room, _, _) in members.items() if in_room == room]
        hellos = [f"hello from {members[other][2]}" for other in speakers]
        assert chats == [*hellos, "done"], (name, chats)
    assert (await rest.relay(node, relay_id))["status"] == 6


async def test_a_node_started_while_redis_is_down_waits_and_then_serves(
    tmp_path: Any, own_redis: RedisServer
) -> None:
    """Start-up with Redis down waits, saying so in the log, and serves once it answers."""
    from tests.cluster import Cluster, node_config
    from tests.ports import free_port

    assert await asyncio.to_thread(own_redis.stop) == 0
    async with Cluster(tmp_path / "late", redis_url=own_redis.url) as cluster:
        node = Node("late", cluster.directory, node_config(free_port(), own_redis.url, None), ())
        cluster.nodes.append(node)  # ended by the cluster, whatever happens
        deadline = time.monotonic() + 10
        while "waiting for redis" not in node.log_text():
            assert node.running and time.monotonic() < deadline, node.log_text()
            await asyncio.sleep(0.05)
        assert await node.status("/healthz") is None  # not serving yet
        await asyncio.to_thread(own_redis.start)
        await node.wait_ready()
        assert await node.status("/readyz") == 200
        assert "answers: serving" in node.log_text()
