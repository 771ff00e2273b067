"""A whole socket without a network: upgrade bytes in, frames out, two manual clocks.

The node's hub is given a FakeTransport as the HTTP server would hand it over, client frames
are fed to it as bytes, and time moves only when the test moves it: the services' clock
drives pings and heartbeat timeouts (4008), the hub's clock drives write coalescing and the
close grace. Nothing here sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from livesignal.app import create_app
from livesignal.http.appkeys import SERVICES
from livesignal.signal.model.auth import Identity
from livesignal.signal.model.clock import ManualClock
from livesignal.signal.services.rooms import NewRoom
from livesignal.signal.services.wiring import Services
from livesignal.signal.ws.connection import MAX_UNSENT, Connection
from livesignal.signal.ws.frames import OP_CLOSE
from livesignal.signal.ws.hub import SocketHub
from livesignal.signal.ws.link import CLOSE_GRACE
from livesignal.signal.ws.protocol import CLOSE_HEARTBEAT_TIMEOUT, CLOSE_SLOW_CONSUMER
from tests.conftest import make_settings
from tests.signal.ws.sockets import (
    FakeTransport,
    client_frame,
    client_text,
    close_code,
    texts,
    upgrade_request,
)

FLUSH = 0.02
INTERVAL, TIMEOUT = 10.0, 30.0


async def settle(condition: Callable[[], bool], rounds: int = 2000) -> None:
    """Let the loop run what is ready (no time passes) until `condition` holds."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@dataclass
class Node:
    hub: SocketHub
    services: Services
    time: ManualClock  # the services' clock: pings, heartbeats, tokens
    hub_time: ManualClock  # the hub's clock: coalescing, close grace

    async def open(self, user_id: str) -> Peer:
        transport = FakeTransport()
        token, _ = self.services.tokens.issue(user_id, self.time.now())
        self.hub.take_upgrade(transport, upgrade_request(token), b"")
        await settle(lambda: bool(transport.written))
        connection = next(c for c in self.hub.connections if c.link.transport is transport)
        return Peer(self, transport, connection)


@dataclass
class Peer:
    node: Node
    transport: FakeTransport
    connection: Connection
    next_id: int = 1

    def send(self, data: bytes) -> None:
        self.connection.link.data_received(data)

    async def request(self, kind: str, **data: Any) -> dict[str, Any]:
        request_id, self.next_id = self.next_id, self.next_id + 1
        seen = len(self.transport.written)
        self.send(client_text({"id": request_id, "type": kind, "data": data}))

        def replied() -> bool:
            return any(f.get("id") == request_id for f in texts(self.received(seen)))

        await settle(replied)
        reply = next(f for f in texts(self.received(seen)) if f.get("id") == request_id)
        assert reply["code"] == 0, reply
        return dict(reply["data"])

    def received(self, since: int = 0) -> bytes:
        return bytes(self.transport.written[since:])


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    settings = make_settings(
        {
            "ws": {"flush_interval": FLUSH},
            "presence": {"heartbeat_interval": INTERVAL, "missed_heartbeats": 3},
        }
    )
    time, hub_time = ManualClock(), ManualClock()
    app = create_app(settings, clock=time, run_sweeper=False)
    services = app[SERVICES]
    hub = SocketHub(services, clock=hub_time)
    pinging = asyncio.ensure_future(hub.run())
    yield Node(hub, services, time, hub_time)
    pinging.cancel()
    for connection in list(hub.connections):
        connection.link.connection_lost(None)
    await asyncio.gather(pinging, return_exceptions=True)


async def live_room(node: Node) -> str:
    anchor = Identity("anchor")
    await node.services.users.ensure("anchor")
    room = await node.services.rooms.create(anchor, NewRoom(title="room"))
    await node.services.rooms.start(anchor, room["live_id"])
    return str(room["live_id"])


async def chat(node: Node, live_id: str, text: str) -> None:
    await node.services.chat.send(Identity("anchor"), live_id, text)


async def joined_viewer(node: Node) -> tuple[Peer, str]:
    live_id = await live_room(node)
    viewer = await node.open("viewer")
    await viewer.request("room.join", live_id=live_id)
    node.hub_time.advance(1.0)  # the join's own events are long out: a quiet room
    viewer.transport.take()
    return viewer, live_id


def chat_texts(data: bytes) -> list[str]:
    return [f["data"]["text"] for f in texts(data) if f.get("event") == "chat.message"]


async def test_the_upgrade_is_answered_101_then_welcome(node: Node) -> None:
    peer = await node.open("viewer")
    head = peer.received()
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    (welcome,) = texts(head)
    assert welcome["type"] == "welcome" and welcome["data"]["user_id"] == "viewer"


async def test_room_events_coalesce_on_the_hubs_clock_and_a_reply_takes_them_along(
    node: Node,
) -> None:
    viewer, live_id = await joined_viewer(node)
    await chat(node, live_id, "at once")  # a quiet room: written now
    assert chat_texts(viewer.transport.take()) == ["at once"]
    writes = viewer.transport.writes
    await chat(node, live_id, "b")
    await chat(node, live_id, "c")
    assert viewer.transport.take() == b""  # within the interval: waiting
    node.hub_time.advance(FLUSH)
    assert chat_texts(viewer.transport.take()) == ["b", "c"]
    assert viewer.transport.writes == writes + 1  # in one write
    await chat(node, live_id, "queued")
    seen = len(viewer.transport.written)
    await viewer.request("room.info", live_id=live_id)  # no time passes
    frames = texts(viewer.received(seen))
    assert [f.get("event") or f["type"] for f in frames] == ["chat.message", "reply"]


async def test_events_at_or_below_the_joins_seq_are_not_written_twice(node: Node) -> None:
    live_id = await live_room(node)
    await chat(node, live_id, "before")
    viewer = await node.open("viewer")
    joined = await viewer.request("room.join", live_id=live_id)
    node.hub_time.advance(1.0)
    await chat(node, live_id, "after")
    node.hub_time.advance(1.0)
    seqs = [f["seq"] for f in texts(viewer.received()) if f.get("type") == "event"]
    assert seqs == sorted(set(seqs)) and all(seq > joined["seq"] for seq in seqs)
    assert chat_texts(viewer.received()) == ["after"]


async def test_a_socket_that_cannot_keep_up_is_closed_with_4009(node: Node) -> None:
    viewer, live_id = await joined_viewer(node)
    viewer.transport.buffered = MAX_UNSENT  # the peer stopped reading long ago
    await chat(node, live_id, "one too many")
    assert close_code(viewer.transport.take()) == CLOSE_SLOW_CONSUMER
    assert viewer.connection.session.closing
    # its membership ends at once, not when a peer that stopped reading finally goes
    await settle(lambda: viewer.connection.session.attached is None)
    assert (await node.services.rooms.info(Identity("anchor"), live_id))["online_count"] == 1


async def test_a_silent_socket_is_pinged_then_closed_with_4008_after_the_timeout(
    node: Node,
) -> None:
    peer = await node.open("viewer")
    peer.transport.take()
    node.time.advance(INTERVAL)
    await settle(lambda: bool(peer.transport.written))
    assert peer.transport.take() == b"\x89\x00"  # a ping
    node.time.advance(INTERVAL)
    await settle(lambda: bool(peer.transport.written))
    peer.transport.take()
    peer.send(client_frame(0xA, b""))  # a pong at 20 s: alive
    for _ in range(3):  # at 30, 40 and 50 s it has been silent for at most the timeout
        node.time.advance(INTERVAL)
        await settle(lambda: bool(peer.transport.written))
        assert peer.transport.take() == b"\x89\x00"
    node.time.advance(INTERVAL)  # at 60 s: 40 s of silence
    await settle(lambda: bool(peer.transport.written))
    assert close_code(peer.transport.take()) == CLOSE_HEARTBEAT_TIMEOUT


async def test_a_peer_that_never_answers_our_close_is_cut_after_the_grace(node: Node) -> None:
    peer = await node.open("viewer")
    peer.connection.close(CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout")
    assert close_code(peer.transport.take()) == CLOSE_HEARTBEAT_TIMEOUT
    node.hub_time.advance(CLOSE_GRACE - 0.01)
    assert not peer.transport.aborted
    node.hub_time.advance(0.01)
    assert peer.transport.aborted


async def test_a_peer_that_answers_our_close_is_closed_cleanly_not_cut(node: Node) -> None:
    peer = await node.open("viewer")
    peer.connection.close(CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout")
    peer.send(client_frame(OP_CLOSE, CLOSE_HEARTBEAT_TIMEOUT.to_bytes(2, "big")))
    assert peer.transport.closed
    peer.connection.link.connection_lost(None)  # the kernel reports the end
    node.hub_time.advance(CLOSE_GRACE * 2)
    assert not peer.transport.aborted


async def test_requests_are_answered_in_the_order_they_came(node: Node) -> None:
    live_id = await live_room(node)
    peer = await node.open("viewer")
    burst = b"".join(
        client_text({"id": index, "type": "room.info", "data": {"live_id": live_id}})
        for index in range(1, 6)
    )
    peer.send(burst + client_text({"type": "ping"}))
    await settle(lambda: len([f for f in texts(peer.received()) if f["type"] == "pong"]) == 1)
    frames = [f for f in texts(peer.received()) if f["type"] in ("reply", "pong")]
    assert [f.get("id", "pong") for f in frames] == [1, 2, 3, 4, 5, "pong"]


@pytest.mark.parametrize("how", ["room.leave", "switch"])
async def test_leaving_a_room_still_delivers_what_its_fan_out_held_for_the_socket(
    node: Node, how: str
) -> None:
    """Events queued for coalescing were delivered before the socket left: they reach it,
    ahead of the reply, however it leaves (a leave, or a join of another room)."""
    viewer, live_id = await joined_viewer(node)
    await chat(node, live_id, "at once")
    await chat(node, live_id, "queued")  # within the interval: waiting for the flush
    seen = len(viewer.transport.written)
    if how == "room.leave":
        await viewer.request("room.leave", live_id=live_id)
    else:
        await viewer.request("room.join", live_id=await live_room(node))
    frames = texts(viewer.received(seen))
    assert frames[0].get("event") == "chat.message" and frames[0]["data"]["text"] == "queued"
    assert frames[-1]["type"] == "reply"


async def test_a_resume_replays_more_than_a_send_buffer_of_history(node: Node) -> None:
    """A resume may replay up to the room's whole history (PROTOCOL §4.5): over 1 MiB of it
    is written frame by frame, not refused as one write too large for the socket."""
    live_id = await live_room(node)
    viewer = await node.open("viewer")
    joined = await viewer.request("room.join", live_id=live_id)
    text = "x" * 4000
    for _ in range(300):  # 1.2 MB of chat
        await chat(node, live_id, text)
    late = await node.open("late")
    resumed = await late.request("room.resume", live_id=live_id, since=joined["seq"])
    assert resumed["recovered"] is True
    assert len(chat_texts(late.received())) == 300
    assert not late.connection.session.closing
