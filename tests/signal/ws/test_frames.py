"""The sans-I/O WebSocket frame reader and handshake (RFC 6455) the server reads clients with."""

from __future__ import annotations

import pytest

from livesignal.signal.ws.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameReader,
    Message,
    WsProtocolError,
    unmask,
)

MASK = b"\x37\xfa\x21\x3d"


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 1 << 16:
        head += bytes([bit | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + length.to_bytes(8, "big")
    return head + (MASK + unmask(payload, MASK) if masked else payload)


def read_all(data: bytes, step: int | None = None, limit: int = 64 * 1024) -> list[Message]:
    reader = FrameReader(limit)
    if step is None:
        return reader.feed(data)
    out: list[Message] = []
    for start in range(0, len(data), step):
        out += reader.feed(data[start : start + step])
    return out


def test_messages_come_whole_and_in_order_however_the_bytes_are_cut() -> None:
    data = (
        frame(OP_TEXT, "héllo".encode())
        + frame(OP_TEXT, b"par", fin=False)
        + frame(OP_PING, b"in between")  # a control frame inside a fragmented message
        + frame(0x0, b"ts")
        + frame(OP_BINARY, bytes(range(256)) * 200)  # a 16-bit length
        + frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye")
    )
    for step in (None, 1, 7, 4096):
        messages = read_all(data, step)
        assert [(m.opcode, m.text or m.data[:10]) for m in messages] == [
            (OP_TEXT, "héllo"),
            (OP_PING, b"in between"),
            (OP_TEXT, "parts"),
            (OP_BINARY, bytes(range(10))),
            (OP_CLOSE, b"bye"),
        ]
        assert messages[-1].close_code == 1000


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(OP_TEXT, b"x", masked=False), 1002),  # clients must mask
        (bytes([0x80 | 0x40 | OP_TEXT, 0x80]) + MASK, 1002),  # RSV1 without an extension
        (frame(0x3, b""), 1002),  # a reserved opcode
        (frame(0x0, b"x"), 1002),  # continuation of nothing
        (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), 1002),
        (frame(OP_PING, b"x" * 126), 1002),  # control frames are short
        (frame(OP_PING, b"x", fin=False), 1002),  # and whole
        (frame(OP_TEXT, b"\xff\xfe"), 1007),  # text must be UTF-8
        (frame(OP_CLOSE, (1005).to_bytes(2, "big")), 1002),  # a code no one may send
        (frame(OP_CLOSE, b"\x03"), 1002),
        (frame(OP_TEXT, b"x" * (64 * 1024 + 1)), 1009),
        (frame(OP_TEXT, b"x" * 40000, fin=False) + frame(0x0, b"x" * 30000), 1009),
    ],
)
def test_protocol_errors_carry_the_close_code_to_answer_with(data: bytes, code: int) -> None:
    with pytest.raises(WsProtocolError) as refused:
        read_all(data)
    assert refused.value.code == code


def test_an_oversized_frame_is_refused_from_its_header_before_its_payload_arrives() -> None:
    head = frame(OP_TEXT, b"x" * (10 * 1024 * 1024))[:14]  # header and mask only
    with pytest.raises(WsProtocolError) as refused:
        FrameReader(64 * 1024).feed(head)
    assert refused.value.code == 1009


def test_a_flood_of_empty_fragments_holds_no_memory() -> None:
    """A message opened and never finished, fed empty continuation frames without end: what
    the reader holds stays bounded by the message limit, not by the number of frames."""
    import tracemalloc

    reader = FrameReader(64 * 1024)
    assert reader.feed(frame(OP_TEXT, b"{", fin=False)) == []
    chunk = frame(0x0, b"", fin=False) * 10_000  # 60 KB of frames that add nothing
    tracemalloc.start()
    try:
        for _ in range(4):  # forty thousand fragments: 320 KB if each kept a pointer
            assert reader.feed(chunk) == []
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 128 * 1024
    last = reader.feed(frame(0x0, b"}"))
    assert [m.text for m in last] == ["{}"]
