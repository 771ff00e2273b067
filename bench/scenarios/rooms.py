"""Scenario 3, many rooms: 500 rooms of 20 sockets, chat in every room at once (the shape of
real traffic: many small rooms rather than one large one). The sockets join their rooms the
ordinary way (livesignal: room.join; socket.io: a socket.io room)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.scenarios.chat import ChatRow, measure, skipped, table
from bench.servers import Candidate

# rooms, sockets per room, messages per room, messages per second per room: 500 rooms x
# 4/s = 2000 messages/s = 40,000 deliveries/s for 3 s.
FULL = (500, 20, 12, 4.0)
QUICK = (20, 10, 8, 4.0)


@dataclass
class RoomsResult:
    size: tuple[int, int, int, float]
    rows: list[ChatRow] = field(default_factory=list)


async def run(candidates: list[Candidate], quick: bool) -> RoomsResult:
    result = RoomsResult(QUICK if quick else FULL)
    rooms, sockets, messages, rate = result.size
    for candidate in candidates:
        if candidate.skip:
            result.rows.append(skipped(candidate, f"skipped: {candidate.skip}"))
            continue
        try:
            with candidate.start() as target:
                row = await measure(target, rooms, sockets, messages, rate, admin=False)
                result.rows.append(row)
        except Exception as error:  # one server failing does not end the run
            print(f"   {candidate.label} failed: {error!r}", flush=True)
            result.rows.append(skipped(candidate, f"failed: {error!r}"[:200]))
    return result


def markdown(result: RoomsResult) -> str:
    rooms, sockets, messages, rate = result.size
    total = rooms * rate
    return "\n".join(
        [
            f"## 3. Many rooms: {rooms} rooms of {sockets} sockets",
            "",
            f"{rooms} rooms of {sockets} sockets; in each, one socket (livesignal: the room's "
            f"anchor) sends {messages} messages at {rate:g}/s, phases spread evenly: "
            f"{total:,.0f} messages/s = {total * sockets:,.0f} deliveries/s offered, "
            f"{rooms * sockets * messages:,} deliveries in all.",
            "",
            table(result.rows, sizes=False),
        ]
    )
