"""Chat load: rooms of raw sockets in worker processes; in each room one socket (the room's
anchor for livesignal) sends chat messages at a fixed rate and every socket of the room,
the sender's included, must receive each of them.

One room of N sockets is the fan-out scenario; many small rooms is the shape of real
traffic. The sockets are dealt to the workers round-robin over all rooms, so a room may span
workers; the senders are paced per room, their phases spread evenly over the period.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.loadgen.client import RawSocket, open_many
from bench.loadgen.procs import Workers, receive, run_worker
from bench.loadgen.wire import Dialect, stamp_text

SAMPLE_EVERY = 10  # every 10th socket parses the send time of every message it receives
MAX_SAMPLES = 100_000  # per worker
SETTLE_POLL = 0.3


@dataclass(frozen=True)
class Room:
    id: str  # livesignal live_id or socket.io room name
    sender: str  # the user who sends (livesignal: the room's anchor)
    sockets: int  # sockets in the room, the sender's included


@dataclass(frozen=True)
class ChatPlan:
    dialect: Dialect
    port: int
    rooms: tuple[Room, ...]
    messages: int  # per room
    rate: float  # messages per second, per room
    admin_receivers: bool = False  # livesignal: subscribe by an admin's room.start, no join
    workers: int = 2
    drain: float = 20.0  # seconds after the last send a worker still waits for deliveries

    @property
    def sockets(self) -> int:
        return sum(room.sockets for room in self.rooms)

    @property
    def expected(self) -> int:
        return sum(room.sockets for room in self.rooms) * self.messages


@dataclass
class ChatStats:
    delivered: int = 0
    expected: int = 0
    short_sockets: int = 0  # sockets that did not receive every message
    lost_sockets: int = 0  # sockets the server closed
    latencies: list[float] = field(default_factory=list)
    first_send: float = 0.0
    last_send: float = 0.0
    last_receive: float = 0.0


class Meter:
    """What the scenario measures around the sending phase (server CPU, its metrics)."""

    async def begin(self) -> None: ...

    async def end(self) -> None: ...


# (global socket index, room index, index within the room)
Slot = tuple[int, int, int]


def slots_of(plan: ChatPlan, worker: int) -> list[Slot]:
    slots, index = [], 0
    for r, room in enumerate(plan.rooms):
        for j in range(room.sockets):
            if index % plan.workers == worker:
                slots.append((index, r, j))
            index += 1
    return slots


async def worker_main(plan: ChatPlan, worker: int, conn: Connection) -> None:
    slots = slots_of(plan, worker)
    specs = []
    for g, r, j in slots:
        room = plan.rooms[r]
        user = room.sender if j == 0 else f"{room.id}-s{j}"
        admin = plan.admin_receivers and j > 0
        specs.append((user, room.id, admin, g % SAMPLE_EVERY == 0))
    sockets = await open_many(specs, plan.dialect, plan.port)
    conn.send("ready")
    command = await receive(conn)
    if command[0] != "go":
        return
    start_at, deadline = command[1], command[2]
    done = asyncio.Event()
    remaining = len(sockets)

    def one_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            done.set()

    for sock in sockets:
        sock.wait_for(plan.messages, one_done)
    senders = [(r, sockets[i]) for i, (_, r, j) in enumerate(slots) if j == 0]
    first_send, last_send = await send_paced(plan, senders, start_at)
    try:
        await asyncio.wait_for(done.wait(), max(0.1, deadline - time.monotonic()))
    except TimeoutError:
        pass
    conn.send(report(plan, sockets, first_send, last_send))
    for sock in sockets:
        sock.close()


async def send_paced(
    plan: ChatPlan, senders: list[tuple[int, RawSocket]], start_at: float
) -> tuple[float, float]:
    """Each sender sends plan.messages at plan.rate; room r's phase is r/(rooms*rate)."""
    schedule = [
        (start_at + (r / len(plan.rooms) + i) / plan.rate, r, k)
        for k, (r, _) in enumerate(senders)
        for i in range(plan.messages)
    ]
    heapq.heapify(schedule)
    first = last = 0.0
    while schedule:
        delay = schedule[0][0] - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        while schedule and schedule[0][0] <= now:
            _, r, k = heapq.heappop(schedule)
            senders[k][1].write(plan.dialect.chat(plan.rooms[r].id, stamp_text()))
            last = time.monotonic()
            first = first or last
    return first, last


def report(
    plan: ChatPlan, sockets: list[RawSocket], first_send: float, last_send: float
) -> dict[str, Any]:
    latencies = [lat for sock in sockets for lat in sock.latencies]
    if len(latencies) > MAX_SAMPLES:
        latencies = random.sample(latencies, MAX_SAMPLES)
    return {
        "delivered": sum(min(sock.count, plan.messages) for sock in sockets),
        "short": sum(1 for sock in sockets if sock.count < plan.messages),
        "lost": sum(1 for sock in sockets if sock.lost),
        "latencies": latencies,
        "first_send": first_send,
        "last_send": last_send,
        "last_receive": max((sock.last_receive for sock in sockets), default=0.0),
    }


def worker(plan: ChatPlan, worker: int, conn: Connection) -> None:
    run_worker(worker_main, plan, worker, conn)


async def run_chat(
    plan: ChatPlan, meter: Meter, settle: Callable[[], Awaitable[None]] | None = None
) -> ChatStats:
    """Open the plan's sockets, let the server settle, send, and gather what arrived."""
    with Workers(worker, [(plan, w) for w in range(plan.workers)]) as workers:
        await workers.gather(timeout=60 + plan.sockets / 200)
        if settle is not None:
            await settle()
        await meter.begin()
        start_at = time.monotonic() + 0.2
        deadline = start_at + plan.messages / plan.rate + plan.drain
        workers.send_all(("go", start_at, deadline))
        reports = await workers.gather(timeout=deadline - time.monotonic() + 15)
        await meter.end()
    stats = ChatStats(expected=plan.expected)
    for part in reports:
        stats.delivered += part["delivered"]
        stats.short_sockets += part["short"]
        stats.lost_sockets += part["lost"]
        stats.latencies.extend(part["latencies"])
        stats.last_receive = max(stats.last_receive, part["last_receive"])
        stats.last_send = max(stats.last_send, part["last_send"])
    stats.first_send = min((p["first_send"] for p in reports if p["first_send"]), default=0.0)
    return stats
