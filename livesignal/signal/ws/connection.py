"""One client's WebSocket, the asyncio side (PROTOCOL §4): a SocketSession's I/O.

The session (session.py) decides; this adapter does what it decides: it writes frames into
the socket's transport, runs the queued operations one at a time in a task that exists only
while there is work, attaches to and detaches from the room's fan-out, releases presence,
and closes. Outgoing frames are written straight into the transport, in the order they are
produced; its buffer is the socket's send queue, bounded at 1 MiB: past that the socket is
closed with 4009 rather than slowing its room.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

from livesignal.signal.model.auth import Identity
from livesignal.signal.model.errors import ApiError, BadRequest, StoreUnavailable
from livesignal.signal.model.events import DETACH, RoomEvent, UserEvent
from livesignal.signal.model.params import Params
from livesignal.signal.services.operations import OPERATIONS, AttachAction, Call
from livesignal.signal.services.presence import Joined
from livesignal.signal.services.wiring import Services
from livesignal.signal.ws.fanout import RoomFanout
from livesignal.signal.ws.frames import Message, text_wire
from livesignal.signal.ws.link import SocketLink
from livesignal.signal.ws.protocol import (
    CLOSE_SLOW_CONSUMER,
    Request,
    error_frame,
    reply_frame,
    room_event_wire,
)
from livesignal.signal.ws.session import Close, PeerClose, Queued, SocketSession

log = logging.getLogger(__name__)

MAX_UNSENT = 1024 * 1024  # bytes buffered for one socket before it counts as a slow consumer


class SocketHost(Protocol):
    """What a connection needs of its node (ws/hub.py)."""

    def spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]: ...

    async def attach(self, connection: Connection, live_id: str) -> RoomFanout: ...

    def detach(self, connection: Connection, live_id: str) -> None: ...

    def forget(self, connection: Connection) -> None: ...


class Connection:
    # Thousands of these live at once: no per-instance __dict__.
    __slots__ = (
        "link",
        "_transport",
        "address",
        "services",
        "session",
        "hub",
        "_fanout",
        "_close_task",
        "_worker",
    )

    def __init__(
        self,
        link: SocketLink,
        services: Services,
        session: SocketSession,
        hub: SocketHost,
        address: str,
    ) -> None:
        self.link = link
        self._transport = link.transport
        self.address = address  # the client's address, as counted for sockets_per_ip
        self.services = services
        self.session = session
        self.hub = hub
        self._fanout: RoomFanout | None = None  # the fan-out of the attached room
        self._close_task: asyncio.Future[None] | None = None
        self._worker: asyncio.Future[None] | None = None  # runs the inbox while it has work

    @property
    def identity(self) -> Identity:
        return self.session.identity

    @property
    def holds_membership(self) -> bool:
        return self.session.holds_membership

    # --- outgoing ------------------------------------------------------------------------
    def send(self, frame: str) -> None:
        self.send_wire(text_wire(frame))

    def send_wire(self, wire: bytes) -> None:
        """Write a frame produced for this socket now (a reply, a user event, a ping).

        Room events its fan-out still holds for coalescing were produced earlier: they go
        first, so the socket sees every frame in the order the server produced it.
        """
        fanout = self._fanout
        if fanout is not None and fanout.queued:
            fanout.catch_up(self)
        self._write(wire)

    def _write(self, wire: bytes) -> None:
        """Write ready-made frames; a socket that cannot keep up is closed, not waited for."""
        transport = self._transport
        if self.session.closing or transport.is_closing():
            return
        if transport.get_write_buffer_size() + len(wire) > MAX_UNSENT:
            log.info(
                "closing slow consumer %s (%s)", self.session.session_id, self.identity.user_id
            )
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer", catch_up=False)
            return
        transport.write(wire)

    def _act(self, answer: bytes | Close | PeerClose | None) -> None:
        if isinstance(answer, bytes):
            if answer:
                self.send_wire(answer)
        elif isinstance(answer, Close):
            self.close(answer.code, answer.reason, leave_reason=answer.leave_reason)
        elif isinstance(answer, PeerClose):
            self.link.answer_close(answer.code)

    def close(
        self,
        code: int,
        message: str,
        *,
        leave_reason: str | None = None,
        catch_up: bool = True,
    ) -> None:
        """Close from the server side; room events queued for it still go out first
        (`catch_up`), unless it is closed for not taking what it was sent."""
        session = self.session
        if session.closing:
            return
        fanout = self._fanout
        if catch_up and fanout is not None and fanout.queued:
            fanout.catch_up(self)
            if session.closing:  # that was more than it could take
                return
        session.begin_close(leave_reason)
        # Presence ends now, not when a silent peer finally lets the closing handshake end.
        self.hub.spawn(self._leave_attached_room())
        self.link.send_close(code, message)  # written now, behind what is queued
        self._close_task = self.hub.spawn(self._closed())

    async def _closed(self) -> None:
        """Until the closing handshake ends (the link cuts a peer that does not answer)."""
        link = self.link
        if link.lost:
            return
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def _ended() -> None:
            if not ended.done():
                ended.set_result(None)

        link.on_lost(_ended)
        await ended

    # --- events from this node's fan-out --------------------------------------------------
    def on_room_event(self, event: RoomEvent, wire: bytes) -> bool:
        """Deliver one room event unless held back or already delivered; whether it went."""
        session = self.session
        out = session.room_event(event, wire)
        if out is None:
            return False
        self._write(out)
        if session.attached is None:  # room.deleted: the socket let go of the room
            self._leave_fanout(event.live_id)
        return True

    def on_room_batch(
        self, live_id: str, batch: list[Queued], first_seq: int, joined: bytes, deleted: bool
    ) -> int:
        """A coalesced run of the room's events, in one write when this socket takes them
        all; how many of them it delivered."""
        out = self.session.room_batch(live_id, batch, first_seq, joined, deleted)
        if out is None:
            return sum(self.on_room_event(event, wire) for event, wire, _ in batch)
        self._write(out)
        if deleted:
            self._leave_fanout(live_id)
        return len(batch)

    def on_user_event(self, event: UserEvent, wire: bytes) -> None:
        if event.name == DETACH:
            # The user left the room by another way: this socket lets go of it (no release).
            if self.session.attached == str(event.data.get("live_id", "")):
                self._let_go_of_room()
            return
        self.send_wire(wire)

    def _let_go_of_room(self) -> tuple[str, bool] | None:
        """Stop receiving the attached room's events: (the room, whether this socket held the
        membership), or None. What its fan-out still holds for this socket goes out first:
        it was delivered before the socket left."""
        fanout = self._fanout
        if fanout is not None and fanout.queued:
            fanout.catch_up(self)
        left = self.session.let_go()
        if left is not None:
            self._leave_fanout(left[0])
        return left

    def _leave_fanout(self, live_id: str) -> None:
        self.hub.detach(self, live_id)
        self._fanout = None

    # --- the connection's life -----------------------------------------------------------
    def start(self, pending_invitations: list[dict[str, Any]]) -> None:
        """The upgrade is answered: greet the client and give it what waits for it."""
        presence = self.services.settings.presence
        self.send_wire(
            self.session.greeting(
                presence.heartbeat_interval, presence.timeout, pending_invitations
            )
        )

    def on_lost(self) -> None:
        """The TCP connection is gone: forget the socket, and leave its room."""
        self.session.closing = True
        self.hub.forget(self)
        self.hub.spawn(self._leave_attached_room())

    async def _leave_attached_room(self) -> None:
        """Stop receiving the room's events and drop this socket's hold on the membership."""
        left = self._let_go_of_room()
        if left is None:
            return
        live_id, held = left
        if not held:
            return
        user_id = self.identity.user_id
        try:
            await self.services.presence.release_socket(user_id, live_id, self.session.leave_reason)
        except (StoreUnavailable, ConnectionError, TimeoutError, OSError) as exc:
            # The hold stays recorded for this node; the member lapses with it only if the
            # node itself stops renewing its lease. Logged, not raised: the socket is gone.
            log.warning("could not release presence of %s: %s", user_id, exc)
        except Exception:
            log.exception("could not release presence of %s", user_id)

    # --- incoming (from the link) ---------------------------------------------------------
    def on_message(self, message: Message) -> None:
        session = self.session
        item = session.receive(message, self.services.clock.now())
        if item is not None:
            self._act(session.answer(item))
            return
        if session.inbox is None:
            return
        if session.inbox_full:
            self._transport.pause_reading()  # a client sending faster than we answer waits
        if self._worker is None:
            self._worker = self.hub.spawn(self._work())

    def on_protocol_error(self, code: int, reason: str) -> None:
        self.close(code, reason)

    async def _work(self) -> None:
        """Run queued frames one at a time, in order; ends when the queue is empty."""
        session = self.session
        try:
            while (queued := session.next_queued()) is not None:
                item, resume = queued
                if resume and not self._transport.is_closing():
                    self._transport.resume_reading()
                if isinstance(item, Request):
                    if not session.closing:
                        await self._dispatch(item)
                else:
                    self._act(session.answer(item))
            if self.link.lost:
                # The peer left while an operation ran: on_lost left the room it was in then,
                # and what the operation attached since is left now (no ghost member).
                await self._leave_attached_room()
        finally:
            session.inbox = None
            self._worker = None

    async def _dispatch(self, request: Request) -> None:
        try:
            self.services.rates.admit_request(self.identity)
            handler = OPERATIONS.get(request.type)
            if handler is None:
                raise BadRequest(f"unknown type {request.type!r}")
            call = Call(self.identity, Params(request.data), socket=self)
            result = await handler(self.services, call)
            self.send(reply_frame(request.id, result))
        except ApiError as error:
            self.send(error_frame(request.id, error))
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.warning("%s failed, store unreachable: %s", request.type, exc)
            self.send(error_frame(request.id, StoreUnavailable()))
        except Exception:
            log.exception("%s failed", request.type)
            self.send(error_frame(request.id, ApiError("internal error")))
        if self.session.attaching is not None:
            # The reply is out: what the room sent while attaching follows it.
            self._write_released(self.session.release())

    def _write_released(self, wires: list[bytes]) -> None:
        """Write held events one frame at a time (a long backlog is the kernel's to absorb,
        not one write that alone could count the socket a slow consumer)."""
        fanout = self._fanout
        for wire in wires:
            self._write(wire)
        if self.session.attached is None and fanout is not None:
            self._leave_fanout(fanout.live_id)  # room.deleted was among them

    # --- SocketControl: what operations do to this socket (services/operations.py) -------
    async def attach(self, live_id: str, action: AttachAction, *, joins: bool = True) -> Joined:
        """Run a join-like action and take the room's events from the seq it reports on.

        The room's events are held back while the action runs and released once the reply
        is written (`_dispatch`). `joins` says whether the action makes the user a member
        (with this socket's hold) or only subscribes the socket.
        """
        session = self.session
        already, keeps_hold = session.begin_attach(live_id)
        fanout = self._fanout
        try:
            if not already:
                fanout = await self.hub.attach(self, live_id)
            joined = await action("none" if keeps_hold or not joins else "socket")
        except BaseException:
            self._write_released(session.attach_failed(already))
            if not already:
                self.hub.detach(self, live_id)
            raise
        if session.attached is not None and session.attached != live_id:
            # Still attached elsewhere (the action did not switch the membership, e.g. an
            # admin starting another room): drop that room and this socket's hold on it.
            await self._leave_attached_room()
        if not already:
            self._fanout = fanout
        session.attached_to(live_id, joined.seq, already=already, holds=keeps_hold or joins)
        return joined

    def deliver_history(self, events: list[RoomEvent], seq: int) -> None:
        # One frame at a time, as for held events: a resume may replay a thousand of them.
        for event in events:
            self.send_wire(room_event_wire(event))
        self.session.replayed(seq)

    def reidentify(self, identity: Identity) -> None:
        self.session.identity = identity

    # --- timers (driven by the hub) ------------------------------------------------------
    def tick(self, now: float, timeout: float) -> None:
        self._act(self.session.tick(now, timeout))


def describe(connection: Connection) -> dict[str, Any]:
    """For logs and debugging: who a socket is and what it is attached to."""
    session = connection.session
    return {
        "session_id": session.session_id,
        "user_id": session.identity.user_id,
        "attached": session.attached,
        "room_seq": session.room_seq,
    }
