"""The Python cost of delivering one room event to one socket, without I/O.

    python bench/socket_delivery.py            # ns per delivery, best of 5 x 1M

Calls `Connection.on_room_event` (the session's watermark check, then a write to a transport
that takes everything) a million times: what the socket layer adds to each delivery, apart
from the kernel's send, which dominates the end-to-end figure of bench/run.py (5-9 us).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livesignal.signal.model.auth import Identity  # noqa: E402
from livesignal.signal.model.events import RoomEvent  # noqa: E402
from livesignal.signal.ws.connection import Connection  # noqa: E402
from livesignal.signal.ws.protocol import room_event_wire  # noqa: E402
from livesignal.signal.ws.session import SocketSession  # noqa: E402

DELIVERIES = 1_000_000


class AcceptingTransport:
    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        return None


def main() -> None:
    connection = object.__new__(Connection)  # only what a delivery touches
    connection._transport = AcceptingTransport()  # type: ignore[assignment]
    connection._fanout = None
    session = SocketSession(Identity("viewer"), "s", 0.0)
    session.attached = "live_bench"
    connection.session = session
    events = [
        RoomEvent("live_bench", seq, "chat.message", {"text": "x"}, 0.0)
        for seq in range(1, DELIVERIES + 1)
    ]
    wire = room_event_wire(events[0])
    deliver = connection.on_room_event
    best = float("inf")
    for _ in range(5):
        session.room_seq = 0
        started = time.perf_counter()
        for event in events:
            deliver(event, wire)
        best = min(best, time.perf_counter() - started)
    print(f"{best * 1e9 / DELIVERIES:.0f} ns per delivery (best of 5 x {DELIVERIES:,})")


if __name__ == "__main__":
    main()
