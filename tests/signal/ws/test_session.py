"""SocketSession, sans I/O: messages and room events in, bytes and actions out (PROTOCOL §4).

No socket, no task, no clock: every rule of what one socket remembers is fed in and read
back. The timing rules (coalescing, gap fill, close grace, slow consumers) are in
test_socket_timing.py, on a manual clock.
"""

from __future__ import annotations

from typing import Any

import orjson

from livesignal.signal.model.auth import Identity
from livesignal.signal.model.events import CHAT_MESSAGE, LEFT_TIMEOUT, ROOM_DELETED, RoomEvent
from livesignal.signal.ws.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Message
from livesignal.signal.ws.protocol import (
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_UNSUPPORTED,
    Request,
    room_event_wire,
)
from livesignal.signal.ws.session import (
    INBOX_PAUSE,
    INBOX_RESUME,
    PING_WIRE,
    Close,
    PeerClose,
    SocketSession,
)
from tests.signal.ws.sockets import texts

NOW = 1_700_000_000.0
ROOM = "live_a"


def session(exp: float = NOW + 3600) -> SocketSession:
    return SocketSession(Identity("viewer", exp=int(exp)), "s1", NOW)


def event(seq: int, live_id: str = ROOM, name: str = CHAT_MESSAGE) -> tuple[RoomEvent, bytes]:
    room_event = RoomEvent(live_id, seq, name, {"text": f"m{seq}"}, NOW)
    return room_event, room_event_wire(room_event)


def attached(seq: int = 0) -> SocketSession:
    s = session()
    s.begin_attach(ROOM)
    s.attached_to(ROOM, seq, already=False, holds=True)
    s.release()
    return s


def text(value: Any) -> Message:
    return Message(OP_TEXT, b"", text=orjson.dumps(value).decode())


def seqs(data: bytes | list[bytes]) -> list[int]:
    joined = data if isinstance(data, bytes) else b"".join(data)
    return [frame["seq"] for frame in texts(joined)]


def test_the_watermark_drops_repeats_and_what_is_at_or_below_it() -> None:
    s = attached(seq=5)
    assert s.room_event(*event(4)) is None
    assert s.room_event(*event(5)) is None
    assert seqs(s.room_event(*event(6)) or b"") == [6]
    assert s.room_event(*event(6)) is None  # a repeat (a resubscription overlapping)
    assert seqs(s.room_event(*event(9)) or b"") == [9]  # the node fills gaps, not the socket
    assert s.room_event(*event(8)) is None
    assert s.room_seq == 9


def test_other_rooms_events_are_not_this_sockets() -> None:
    s = attached(seq=0)
    assert s.room_event(*event(1, live_id="live_b")) is None
    assert session().room_event(*event(1)) is None  # attached to no room


def test_events_wait_while_attaching_and_only_those_after_the_reply_go_out() -> None:
    s = session()
    already, keeps_hold = s.begin_attach(ROOM)
    assert (already, keeps_hold) == (False, False)
    for seq in (9, 10, 11, 12):  # the room went on while the join ran
        assert s.room_event(*event(seq)) is None
    s.attached_to(ROOM, 10, already=False, holds=True)  # the join's reply says seq 10
    assert s.room_event(*event(13)) is None  # still held: the reply is not out yet
    assert seqs(s.release()) == [11, 12, 13]  # after the reply, in order, nothing twice
    assert seqs(s.room_event(*event(14)) or b"") == [14]
    assert s.holds_membership


def test_a_failed_attach_drops_what_it_held_unless_the_socket_stays_on_that_room() -> None:
    fresh = session()
    fresh.begin_attach(ROOM)
    fresh.room_event(*event(1))
    assert fresh.attach_failed(already=False) == []
    assert fresh.attaching is None and fresh.attached is None

    rejoining = attached(seq=3)
    already, keeps_hold = rejoining.begin_attach(ROOM)  # a second join of the same room
    assert (already, keeps_hold) == (True, True)  # it takes no second hold
    rejoining.room_event(*event(4))
    assert seqs(rejoining.attach_failed(already=True)) == [4]  # still its room: still due


def test_a_resume_moves_the_watermark_past_its_replay() -> None:
    s = session()
    s.begin_attach(ROOM)
    s.room_event(*event(7))  # arrives while resuming
    s.attached_to(ROOM, 5, already=False, holds=True)
    s.replayed(6)  # the adapter wrote 3..6, even what it had: the client asked
    assert s.room_event(*event(6)) is None
    assert seqs(s.release()) == [7]
    assert s.room_seq == 7


def test_room_deleted_lets_go_of_the_room() -> None:
    s = attached(seq=1)
    assert s.room_event(*event(2, name=ROOM_DELETED)) is not None
    assert s.attached is None and not s.holds_membership
    assert s.room_event(*event(3)) is None


def test_a_coalesced_batch_goes_in_one_piece_only_to_a_socket_due_all_of_it() -> None:
    batch = [(*event(seq), NOW) for seq in (4, 5, 6)]
    joined = b"".join(wire for _, wire, _ in batch)
    due = attached(seq=3)
    assert due.room_batch(ROOM, batch, 4, joined, deleted=False) == joined
    assert due.room_seq == 6
    assert attached(seq=4).room_batch(ROOM, batch, 4, joined, deleted=False) is None
    holding = attached(seq=3)
    holding.begin_attach(ROOM)
    assert holding.room_batch(ROOM, batch, 4, joined, deleted=False) is None
    assert session().room_batch(ROOM, batch, 4, joined, deleted=False) is None


def test_requests_queue_in_order_and_pings_wait_their_turn_behind_them() -> None:
    s = session()
    ping = Message(OP_PING, b"p")
    assert s.receive(ping, NOW) is ping  # nothing in progress: answered at once
    assert s.answer(ping) == b"\x8a\x01p"  # a pong with the same payload
    assert s.receive(text({"id": 1, "type": "room.info"}), NOW) is None  # queued
    assert s.receive(ping, NOW) is None  # behind the request: order is kept
    assert s.receive(text({"type": "ping"}), NOW) is None
    first = s.next_queued()
    assert first is not None and isinstance(first[0], Request) and first[0].id == 1
    assert s.next_queued() == (ping, False)
    app_ping = s.next_queued()
    assert app_ping is not None
    assert texts(s.answer(app_ping[0]) or b"") == [{"type": "pong"}]
    assert s.next_queued() is None and s.inbox is None  # empty: the worker ends


def test_reading_pauses_when_the_inbox_is_full_and_resumes_when_it_drains() -> None:
    s = session()
    for index in range(INBOX_PAUSE):
        assert not s.inbox_full
        s.receive(text({"id": index, "type": "room.info"}), NOW)
    assert s.inbox_full
    resumed_at = None
    for taken in range(INBOX_PAUSE):
        queued = s.next_queued()
        assert queued is not None
        if queued[1]:
            resumed_at = INBOX_PAUSE - taken - 1
    assert resumed_at == INBOX_RESUME


def test_frames_answered_without_the_store() -> None:
    s = session()
    malformed = s.receive(Message(OP_TEXT, b"", text="{nope"), NOW)
    assert malformed is not None
    (error,) = texts(s.answer(malformed) or b"")
    assert error["code"] == 400 and error["id"] is None
    binary = s.receive(Message(OP_BINARY, b"\x00"), NOW)
    assert binary is not None
    assert s.answer(binary) == Close(CLOSE_UNSUPPORTED, "binary frames are not supported")
    assert s.receive(Message(OP_PONG, b""), NOW + 5) is None  # liveness only
    assert s.last_seen == NOW + 5


def test_the_peers_close_is_echoed_and_ends_new_work() -> None:
    s = session()
    close = s.receive(Message(OP_CLOSE, b"", close_code=4000), NOW)
    assert close is not None and s.answer(close) == PeerClose(4000)
    assert s.closing
    assert s.receive(text({"id": 1, "type": "room.info"}), NOW) is None
    assert s.inbox is None  # nothing queued once closing
    no_code = session()
    message = no_code.receive(Message(OP_CLOSE, b""), NOW)
    assert message is not None and no_code.answer(message) == PeerClose(1000)


def test_each_interval_pings_then_closes_the_silent_with_4008_and_the_expired_with_4001() -> None:
    s = session(exp=NOW + 100)
    assert s.tick(NOW + 10, timeout=30) == PING_WIRE
    s.receive(Message(OP_PONG, b""), NOW + 20)
    assert s.tick(NOW + 45, timeout=30) == PING_WIRE  # heard 25 s ago: alive
    assert s.tick(NOW + 51, timeout=30) == Close(
        CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout", LEFT_TIMEOUT
    )
    talkative = session(exp=NOW + 100)
    talkative.receive(Message(OP_PONG, b""), NOW + 99)
    assert talkative.tick(NOW + 100, timeout=30) == Close(CLOSE_TOKEN_EXPIRED, "token expired")
    assert talkative.begin_close() and not talkative.begin_close()  # once
    assert talkative.tick(NOW + 200, timeout=30) is None  # closing: no more ticks


def test_the_greeting_is_the_welcome_then_the_invitations_waiting() -> None:
    frames = texts(session().greeting(10.0, 30.0, [{"relay_id": "r1"}]))
    assert frames[0]["type"] == "welcome"
    assert frames[0]["data"]["user_id"] == "viewer"
    assert frames[0]["data"]["heartbeat_timeout"] == 30.0
    assert frames[1] == {
        "type": "event",
        "event": "relay.invited",
        "data": {"relay": {"relay_id": "r1"}},
    }
