"""Idle load: many sockets that joined rooms and then only answer the server's pings.

The sockets are spread over several worker processes (none holds more than PER_WORKER, well
under a process's descriptor limit). The parent grows the population in steps ("open" more),
asks how many pings were answered ("stats"), and ends it ("close").
"""

from __future__ import annotations

from multiprocessing.connection import Connection

from bench.loadgen.client import RawSocket, open_many
from bench.loadgen.procs import Workers, receive, run_worker
from bench.loadgen.wire import Dialect

PER_WORKER = 5000


async def worker_main(dialect: Dialect, port: int, conn: Connection) -> None:
    sockets: list[RawSocket] = []
    while True:
        command = await receive(conn)
        if command[0] == "open":
            specs = [(user, room, False, False) for user, room in command[1]]
            sockets.extend(await open_many(specs, dialect, port))
            conn.send(len(sockets))
        elif command[0] == "stats":
            lost = sum(1 for sock in sockets if sock.lost)
            conn.send({"pongs": sum(sock.pongs for sock in sockets), "lost": lost})
        else:
            for sock in sockets:
                sock.close()
            return


def worker(dialect: Dialect, port: int, conn: Connection) -> None:
    run_worker(worker_main, dialect, port, conn)


class IdleFleet:
    """Worker processes holding idle sockets on one server; a context manager."""

    def __init__(self, dialect: Dialect, port: int, most: int) -> None:
        count = max(1, -(-most // PER_WORKER))
        self.workers = Workers(worker, [(dialect, port)] * count)
        self.opened = 0

    async def grow(self, members: list[tuple[str, str]]) -> None:
        """Open sockets for (user, room) members, dealt over the workers."""
        count = len(self.workers.pipes)
        for w, pipe in enumerate(self.workers.pipes):
            pipe.send(("open", members[w::count]))
        totals = await self.workers.gather(timeout=60 + len(members) / 100)
        self.opened = sum(totals)

    async def stats(self) -> dict[str, int]:
        self.workers.send_all(("stats",))
        parts = await self.workers.gather(timeout=30)
        return {key: sum(part[key] for part in parts) for key in ("pongs", "lost")}

    def __enter__(self) -> IdleFleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.workers.stop()
