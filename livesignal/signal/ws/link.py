"""One `/ws` connection's transport once the HTTP server has handed it over (PROTOCOL §4).

The HTTP server (http/server.py) recognises a `/ws` upgrade from the request head and gives
the TCP transport to a `SocketLink`, so that an open WebSocket costs its transport, this
object and its `Connection`, instead of aiohttp's whole HTTP machinery for the socket's life
(request, parser, response, reader and writer objects, two tasks and a stack of coroutine
frames: about two thirds of what an idle socket used to cost).

The link reads frames (frames.py) and hands whole messages to its Connection; outgoing
frames are written by the Connection straight into `transport`. It runs the closing
handshake: after sending a close frame it keeps reading until the peer answers with its own
(then closes the TCP connection, as RFC 6455 §7.1.1 has the server do), or cuts the
connection after `CLOSE_GRACE`. Every way the link ends a connection is bounded by that
grace: a transport closes only once its buffer is written, which a peer that stopped reading
would otherwise put off forever, holding the socket and its counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from livesignal.signal.model.clock import Clock, Timer
from livesignal.signal.ws.frames import OP_CLOSE, FrameReader, Message, WsProtocolError, close_wire
from livesignal.signal.ws.protocol import MAX_FRAME

CLOSE_GRACE = 3.0  # seconds the peer has to answer our close frame
MAX_EARLY = 64 * 1024  # bytes a client may send before its upgrade is answered


class LinkOwner(Protocol):
    """What the link reports to (the socket's Connection)."""

    def on_message(self, message: Message) -> None: ...

    def on_protocol_error(self, code: int, reason: str) -> None: ...

    def on_lost(self) -> None: ...


class SocketLink(asyncio.Protocol):
    __slots__ = (
        "transport",
        "_clock",
        "_reader",
        "_owner",
        "_early",
        "_closing",
        "_failed",
        "_abort_timer",
        "_lost",
    )

    def __init__(self, transport: asyncio.Transport, early: bytes, clock: Clock) -> None:
        self.transport = transport
        self._clock = clock  # the close grace runs on it
        self._reader: FrameReader | None = None  # set once the upgrade is accepted
        self._owner: LinkOwner | None = None
        self._early: bytearray | None = bytearray(early)
        self._closing = False  # our close frame is out: only the peer's answer matters now
        self._failed = False  # the peer broke the protocol: nothing more is read
        self._abort_timer: Timer | None = None
        self._lost: list[Callable[[], None]] | None = []  # callbacks for the connection's end

    # --- the upgrade ---------------------------------------------------------------------
    def accept(self, answer: bytes, owner: LinkOwner) -> None:
        """Write the 101 answer and start delivering frames to `owner`."""
        self.transport.write(answer)
        self._owner = owner
        self._reader = FrameReader(MAX_FRAME)

    def read_early(self) -> None:
        """Read what the client sent before its upgrade was answered (once it is greeted:
        the welcome frame comes first, PROTOCOL §4.1)."""
        early, self._early = self._early, None
        if early and self._reader is not None:
            self.data_received(bytes(early))

    def refuse(self, answer: bytes) -> None:
        """Answer the upgrade with a plain HTTP refusal and close once it is written."""
        self._early = None
        if self._reader is not None:  # too late for HTTP: the socket is open
            self.transport.abort()
        elif not self.transport.is_closing():
            self.transport.write(answer)
            self._end()

    @property
    def lost(self) -> bool:
        return self._lost is None

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the TCP connection is gone (at once if it is already)."""
        if self._lost is None:
            callback()
        else:
            self._lost.append(callback)

    # --- closing -------------------------------------------------------------------------
    def send_close(self, code: int, reason: str) -> None:
        """Our side of the closing handshake: the frame, then wait for the peer's answer."""
        if self._closing or self.transport.is_closing():
            return
        self._closing = True
        self.transport.write(close_wire(code, reason))
        self._cut_after_grace()

    def answer_close(self, code: int) -> None:
        """The peer started the closing handshake: echo its code and end the connection."""
        if not self._closing and not self.transport.is_closing():
            self._closing = True
            self.transport.write(close_wire(code, ""))
        self._end()

    def _end(self) -> None:
        """Close once what is buffered is written, but no later than CLOSE_GRACE from now."""
        self.transport.close()
        self._cut_after_grace()

    def _cut_after_grace(self) -> None:
        if self._abort_timer is None and self._lost is not None:
            self._abort_timer = self._clock.call_later(CLOSE_GRACE, self.transport.abort)

    # --- asyncio.Protocol ----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:  # the upgrade is still being decided
            early = self._early
            if early is not None:
                early += data
                if len(early) > MAX_EARLY:
                    self.transport.abort()
            return
        if self._failed:
            return  # drained unread until the peer closes, or the grace runs out
        try:
            messages = reader.feed(data)
        except WsProtocolError as error:
            # The stream cannot be read past this point: fail the connection (RFC 6455 §7.1.7)
            # with our close frame, then a FIN. What the peer still sends is read and dropped
            # until it closes (or CLOSE_GRACE passes): closing the TCP socket on unread data
            # would make the kernel answer with a reset, which may cost the peer our frame.
            self._failed = True
            if not self._closing and self._owner is not None:
                self._owner.on_protocol_error(error.code, error.reason)
            if self._closing and self.transport.can_write_eof():
                self.transport.write_eof()  # nothing is written after our close frame
            self._cut_after_grace()
            return
        owner = self._owner
        for message in messages:
            if self._closing:
                if message.opcode == OP_CLOSE:  # the peer's answer to our close frame
                    self._end()
                    return
                continue  # the peer may send a little more before it answers: dropped
            if owner is not None:
                owner.on_message(message)

    def eof_received(self) -> bool:
        # A half-closed peer is a gone peer: close our side too (asyncio does, once the
        # buffer is written; a peer that does not read it is cut after the grace).
        self._cut_after_grace()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        callbacks, self._lost = self._lost or [], None
        self._early = None
        for callback in callbacks:
            callback()
        if self._owner is not None:
            owner, self._owner = self._owner, None
            owner.on_lost()
