"""WebSocket frames (RFC 6455 §5), sans I/O: the opcodes, reading and writing.

Client to server, bytes in, whole messages out: `FrameReader.feed(data)` takes whatever
arrived on the socket and returns the messages it completed, in order; a client breaking the
protocol raises `WsProtocolError` carrying the close code to answer with. No extension is
negotiated, so every RSV bit must be 0; every client frame must be masked; control frames are
short and unfragmented; a text message must be UTF-8; a message over `max_message` bytes is
refused with 1009 as soon as its length is known.

Server to client: `encode_frame` and the frames built on it, unmasked, each in one buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_DATA_OPS = (OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)
FIN = 0x80

CLOSE_NORMAL = 1000
CLOSE_NO_STATUS = 1005  # a close frame without a code (never sent on the wire)
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_MESSAGE_TOO_BIG = 1009

# Codes a peer may send in a close frame (RFC 6455 §7.4.1; 1004-1006, 1015 are reserved).
_SENDABLE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))


class WsProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    opcode: int  # OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING or OP_PONG
    data: bytes  # BINARY, PING, PONG: the payload; CLOSE: the reason (UTF-8)
    close_code: int = CLOSE_NO_STATUS
    text: str = ""  # TEXT: the message


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask, as one big-integer operation (fast for any length)."""
    length = len(payload)
    if not length:
        return payload
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little"
    )


class FrameReader:
    __slots__ = ("_max", "_buffer", "_parts", "_parts_size", "_part_op")

    def __init__(self, max_message: int) -> None:
        self._max = max_message
        self._buffer = bytearray()  # what arrived of frames not complete yet
        # A fragmented data message being assembled: one buffer, so that a flood of empty
        # fragments costs nothing (a list would grow by an entry per frame, unbounded).
        self._parts = bytearray()
        self._parts_size = 0
        self._part_op = 0  # its opcode; 0 when none is open

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer
        buffer += data  # amortized: a frame trickling in byte by byte costs no re-copying
        messages: list[Message] = []
        position = 0
        end = len(buffer)
        while end - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            if first & 0x70:
                raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
            if not second & 0x80:
                raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            fin, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            header = 2
            if length == 126:
                if end - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if end - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
            self._check_frame(fin, opcode, length)
            start = position + header + 4
            if end - start < length:
                break
            mask = bytes(buffer[position + header : start])
            payload = unmask(bytes(buffer[start : start + length]), mask)
            position = start + length
            message = self._on_frame(fin, opcode, payload)
            if message is not None:
                messages.append(message)
        del buffer[:position]
        return messages

    def _check_frame(self, fin: int, opcode: int, length: int) -> None:
        if opcode in _CONTROL_OPS:
            if not fin or length > 125:
                raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "bad control frame")
            return
        if opcode == OP_CONTINUATION:
            if not self._part_op:
                raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "continuation of nothing")
        elif opcode in _DATA_OPS:
            if self._part_op:
                raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        else:
            raise WsProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if self._parts_size + length > self._max:
            raise WsProtocolError(CLOSE_MESSAGE_TOO_BIG, f"message over {self._max} bytes")

    def _on_frame(self, fin: int, opcode: int, payload: bytes) -> Message | None:
        if opcode in _CONTROL_OPS:
            if opcode == OP_CLOSE:
                return _close_message(payload)
            return Message(opcode, payload)
        if opcode != OP_CONTINUATION and fin:
            return _data_message(opcode, payload)
        if opcode != OP_CONTINUATION:
            self._part_op = opcode
        self._parts += payload
        self._parts_size += len(payload)
        if not fin:
            return None
        whole = bytes(self._parts)
        opcode, self._part_op, self._parts, self._parts_size = self._part_op, 0, bytearray(), 0
        return _data_message(opcode, whole)


def _data_message(opcode: int, payload: bytes) -> Message:
    if opcode == OP_TEXT:
        try:
            return Message(OP_TEXT, b"", text=payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise WsProtocolError(CLOSE_INVALID_DATA, "text is not UTF-8") from None
    return Message(opcode, payload)


def _close_message(payload: bytes) -> Message:
    if not payload:
        return Message(OP_CLOSE, b"", CLOSE_NO_STATUS)
    if len(payload) == 1:
        raise WsProtocolError(CLOSE_PROTOCOL_ERROR, "close frame of one byte")
    code = int.from_bytes(payload[:2], "big")
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise WsProtocolError(CLOSE_PROTOCOL_ERROR, f"close code {code} may not be sent")
    reason = payload[2:]
    try:
        reason.decode("utf-8")
    except UnicodeDecodeError:
        raise WsProtocolError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return Message(OP_CLOSE, reason, code)


# --- server-to-client frames -------------------------------------------------------------


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked server-to-client frame (RFC 6455 §5.2)."""
    length = len(payload)
    if length < 126:
        header = bytes((FIN | opcode, length))
    elif length < 1 << 16:
        header = bytes((FIN | opcode, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((FIN | opcode, 127)) + length.to_bytes(8, "big")
    return header + payload


def text_wire(text: str) -> bytes:
    """A text frame ready for the transport: built once, written to every socket it reaches."""
    return encode_frame(OP_TEXT, text.encode())


def close_wire(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut to fit a control frame's 125 bytes."""
    text = reason.encode()[:123].decode("utf-8", "ignore").encode()  # whole characters only
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + text)


def ping_wire() -> bytes:
    return encode_frame(OP_PING, b"")


def pong_wire(payload: bytes) -> bytes:
    return encode_frame(OP_PONG, payload[:125])
