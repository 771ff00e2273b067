"""Load-generator worker processes: spawned, talked to over pipes, bounded in time, ended.

Every wait on a worker has a deadline; a worker that misses it is terminated (SIGTERM, then
SIGKILL), so a stuck server or client never stalls the run.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any


class WorkerError(RuntimeError):
    """A worker reported an error, died or missed its deadline."""


class Workers:
    """Processes running `target(*args, conn)`, one pipe each."""

    def __init__(self, target: Callable[..., None], args_list: list[tuple[Any, ...]]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[BaseProcess] = []
        for args in args_list:
            parent, child = context.Pipe()
            process = context.Process(target=target, args=(*args, child), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def send_all(self, message: Any) -> None:
        for pipe in self.pipes:
            pipe.send(message)

    async def gather(self, timeout: float) -> list[Any]:
        """One message from every worker; WorkerError on an error report or the deadline."""
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        replies = await asyncio.gather(
            *(loop.run_in_executor(None, _receive, pipe, deadline) for pipe in self.pipes)
        )
        for reply in replies:
            if isinstance(reply, str) and reply.startswith("error"):
                raise WorkerError(reply)
        return list(replies)

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("close",))
            except OSError:
                pass
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self.pipes:
            pipe.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _receive(pipe: Connection, deadline: float) -> Any:
    remaining = deadline - time.monotonic()
    try:
        if remaining <= 0 or not pipe.poll(remaining):
            raise WorkerError("a load-generator worker missed its deadline")
        return pipe.recv()
    except (EOFError, OSError) as exc:
        raise WorkerError(f"a load-generator worker died ({exc!r})") from exc


def run_worker(main: Callable[..., Any], *args: Any) -> None:
    """Run `main(*args)` (a coroutine function) in a worker; report a failure over the pipe
    (the last argument) instead of leaving the parent waiting."""
    conn: Connection = args[-1]
    try:
        asyncio.run(main(*args))
    except BaseException as error:
        try:
            conn.send(f"error: {error!r}")
        except OSError:
            pass


async def receive(conn: Connection) -> Any:
    """The next message from the parent, without blocking the worker's event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, conn.recv)
