"""One socket's conversation (PROTOCOL §4), sans I/O: messages and room events in, bytes out.

A `SocketSession` owns what a socket remembers, and decides, without touching a socket, a
task or a clock, what each input produces:
- the watermark: the last seq of its room it delivered; a room event at or below it is a
  repeat and is dropped, so join replies, buffered events and resume race freely;
- attaching: while a join-like operation runs, its room's events are held back, and released
  (newer than the seq the reply reported) once the reply is out;
- the inbox: frames that arrive while an operation runs wait, in order; reading pauses at
  INBOX_PAUSE queued frames and resumes at INBOX_RESUME, so a client sending faster than it
  is answered is held back by the kernel's buffers;
- liveness: each interval it is pinged, or closed for silence (4008) or an expired token
  (4001).
Its outputs are bytes to write (ready-made frames) and a few actions for the adapter that
does the I/O (ws/connection.py): `Close`, `PeerClose`, and "this socket let go of its room"
(`attached` turned None). Everything here is tested by feeding inputs (tests/signal/ws).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from livesignal.signal.model import events
from livesignal.signal.model.auth import Identity
from livesignal.signal.model.errors import BadRequest
from livesignal.signal.model.events import ROOM_DELETED, RoomEvent
from livesignal.signal.ws.frames import (
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Message,
    ping_wire,
    pong_wire,
    text_wire,
)
from livesignal.signal.ws.protocol import (
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_UNSUPPORTED,
    PONG_FRAME,
    AppPing,
    Frame,
    Malformed,
    Request,
    error_frame,
    parse_frame,
    user_event_wire,
    welcome_frame,
)

INBOX_PAUSE = 64
INBOX_RESUME = 16

PING_WIRE = ping_wire()
PONG_WIRE = text_wire(PONG_FRAME)

# (event, its wire frame, when it reached this node's fan-out)
Queued = tuple[RoomEvent, bytes, float]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket from our side with `code`; `leave_reason` is what its member.left says
    (None: the session's own, "leave")."""

    code: int
    reason: str
    leave_reason: str | None = None


@dataclass(frozen=True, slots=True)
class PeerClose:
    """The peer started the closing handshake: echo `code` and end the connection."""

    code: int


Answer = bytes | Close | PeerClose | None


class SocketSession:
    # Thousands of these live at once: no per-instance __dict__ (sockets are idle most of
    # their life, so their memory is what a node's capacity is made of).
    __slots__ = (
        "identity",
        "session_id",
        "attached",
        "holds_membership",
        "room_seq",
        "last_seen",
        "attaching",
        "held",
        "closing",
        "leave_reason",
        "inbox",
    )

    def __init__(self, identity: Identity, session_id: str, now: float) -> None:
        self.identity = identity
        self.session_id = session_id
        self.attached: str | None = None  # the room whose events this socket receives
        self.holds_membership = False  # this socket keeps its user present in `attached`
        self.room_seq = 0  # the last seq of `attached` delivered (the watermark)
        self.last_seen = now
        self.attaching: str | None = None  # a room being attached: its events wait in
        self.held: list[tuple[RoomEvent, bytes]] = []  # ... this buffer until the reply
        self.closing = False  # no new work: the server closes it, or the peer left
        self.leave_reason = events.LEFT_LEAVE
        # Frames that wait for an operation in progress (one runs at a time, in order); None
        # while nothing is queued or running.
        self.inbox: deque[Frame | Message] | None = None

    # --- the greeting --------------------------------------------------------------------
    def greeting(
        self,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        invitations: list[dict[str, Any]],
    ) -> bytes:
        """The welcome frame (PROTOCOL §4.1), then the relay invitations that wait for the user."""
        frames = [
            text_wire(
                welcome_frame(
                    self.session_id,
                    self.identity.user_id,
                    heartbeat_interval,
                    heartbeat_timeout,
                )
            )
        ]
        user_id = self.identity.user_id
        for relay in invitations:
            invited = events.UserEvent(user_id, events.RELAY_INVITED, {"relay": relay})
            frames.append(user_event_wire(invited))
        return b"".join(frames)

    # --- messages from the peer ----------------------------------------------------------
    def receive(self, message: Message, now: float) -> Frame | Message | None:
        """A whole message from the peer: the item to answer at once (see `answer`), or None
        when there is nothing to do now (ignored, or queued in `inbox` behind an operation).
        Requests always queue: the adapter runs the inbox, one operation at a time."""
        self.last_seen = now
        item: Frame | Message = message
        if message.opcode == OP_TEXT:
            if self.closing:
                return None  # the socket is closing: no new work
            item = parse_frame(message.text)
        elif message.opcode == OP_PONG:
            return None  # liveness only
        if self.inbox is None and not isinstance(item, Request):
            return item  # nothing in progress to wait for
        inbox = self.inbox
        if inbox is None:
            inbox = self.inbox = deque()
        inbox.append(item)
        return None

    @property
    def inbox_full(self) -> bool:
        """Reading should pause: the inbox just reached INBOX_PAUSE."""
        return self.inbox is not None and len(self.inbox) == INBOX_PAUSE

    def next_queued(self) -> tuple[Frame | Message, bool] | None:
        """The next queued item and whether reading may resume; None (and the inbox is gone)
        once it is empty."""
        inbox = self.inbox
        if not inbox:
            self.inbox = None
            return None
        item = inbox.popleft()
        return item, len(inbox) == INBOX_RESUME

    def answer(self, item: Frame | Message) -> Answer:
        """What a frame answered without the store produces: pings, malformed frames, binary
        frames and the peer's close."""
        if isinstance(item, AppPing):
            return PONG_WIRE
        if isinstance(item, Malformed):
            return text_wire(error_frame(item.id, BadRequest(item.message)))
        if isinstance(item, Message):
            if item.opcode == OP_PING:
                return pong_wire(item.data)
            if item.opcode == OP_BINARY:
                return Close(CLOSE_UNSUPPORTED, "binary frames are not supported")
            if item.opcode == OP_CLOSE:
                self.closing = True  # the peer leaves: no new work
                code = item.close_code
                return PeerClose(CLOSE_NORMAL if code == CLOSE_NO_STATUS else code)
        return None

    # --- room events ---------------------------------------------------------------------
    def room_event(self, event: RoomEvent, wire: bytes) -> bytes | None:
        """The bytes to write for one room event, or None: held back while its room is being
        attached, not this socket's room, or at or below the watermark. After room.deleted
        the socket has let go of the room (`attached` is None)."""
        if event.live_id == self.attaching:
            self.held.append((event, wire))
            return None
        if event.live_id != self.attached or event.seq <= self.room_seq:
            return None
        self.room_seq = event.seq
        if event.name == ROOM_DELETED:
            self.let_go()
        return wire

    def room_batch(
        self, live_id: str, batch: list[Queued], first_seq: int, joined: bytes, deleted: bool
    ) -> bytes | None:
        """A coalesced run of the room's events as one buffer (`joined`) when this socket
        takes them all; None when it must take them one at a time (`room_event`): held back,
        partly delivered already, or not its room."""
        if self.attached != live_id or self.attaching == live_id or self.room_seq >= first_seq:
            return None
        self.room_seq = batch[-1][0].seq
        if deleted:
            self.let_go()
        return joined

    def let_go(self) -> tuple[str, bool] | None:
        """Stop receiving the attached room's events: (the room, whether this socket held the
        membership, which the adapter then releases), or None when attached to none."""
        live_id = self.attached
        if live_id is None:
            return None
        held = self.holds_membership
        self.attached = None
        self.holds_membership = False
        return live_id, held

    # --- attaching (a join-like operation in progress) -----------------------------------
    def begin_attach(self, live_id: str) -> tuple[bool, bool]:
        """Hold the room's events back from now; (already attached to it, and holding its
        membership: the action then takes no new hold)."""
        already = self.attached == live_id
        self.attaching, self.held = live_id, []
        return already, already and self.holds_membership

    def attach_failed(self, already: bool) -> list[bytes]:
        """The action failed: what arrived meanwhile is still due if the socket stays attached
        to the room (returned, to write), and dropped otherwise."""
        if already:
            return self.release()
        self.attaching, self.held = None, []
        return []

    def attached_to(self, live_id: str, seq: int, *, already: bool, holds: bool) -> None:
        """The action succeeded: the room's events from `seq` on are this socket's."""
        if not already:
            self.attached = live_id
            self.room_seq = seq
        self.holds_membership = holds

    def replayed(self, seq: int) -> None:
        """A resume's replay up to `seq` was written (all of it, as the client asked, even
        what it had): the watermark moves past it."""
        self.room_seq = max(self.room_seq, seq)

    def release(self) -> list[bytes]:
        """The reply is out: the held events newer than the watermark, in order, one frame
        each."""
        held, self.held = self.held, []
        self.attaching = None
        out = []
        for event, wire in held:
            delivered = self.room_event(event, wire)
            if delivered is not None:
                out.append(delivered)
        return out

    # --- closing and liveness ------------------------------------------------------------
    def begin_close(self, leave_reason: str | None = None) -> bool:
        """The server closes the socket; False if it is already closing."""
        if self.closing:
            return False
        self.closing = True
        if leave_reason is not None:
            self.leave_reason = leave_reason
        return True

    def tick(self, now: float, timeout: float) -> bytes | Close | None:
        """Once an interval: a ping, or a close for silence (4008) or an expired token
        (4001); None once closing."""
        if self.closing:
            return None
        if now - self.last_seen > timeout:
            return Close(CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout", events.LEFT_TIMEOUT)
        if self.identity.exp <= now:
            return Close(CLOSE_TOKEN_EXPIRED, "token expired")
        return PING_WIRE
