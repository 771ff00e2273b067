"""PROTOCOL §5: `livesignal serve --workers N` — N processes on one port, kept by a supervisor.

The supervisor (livesignal/workers.py) is run in a subprocess of its own, supervising either
tiny stand-in workers (a few lines of Python that bind the port with SO_REUSEPORT and answer
each connection with their PID) or real `livesignal serve` workers. Every process is on
127.0.0.1, started here and ended by its PID; waits are deadlines, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from livesignal.signal.model.auth import TokenCodec
from livesignal.workers import WORKER_ENV, RestartPolicy, WorkerRole, take_worker_role
from tests.cli import REPO, SECRET, clean_env, config, run_cli
from tests.conftest import record_token
from tests.ports import free_port

START_DEADLINE = 20.0
STOP_DEADLINE = 15.0  # a real worker's grace (5 s) and the supervisor's margin fit in it
POLL = 0.02

# Runs a Supervisor: argv = JSON command, worker count, stop timeout, JSON extra env, the
# first restart delay.
DRIVER = """
import asyncio, json, logging, sys
from livesignal.workers import RestartPolicy, Supervisor
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
supervisor = Supervisor(
    json.loads(sys.argv[1]),
    int(sys.argv[2]),
    stop_timeout=float(sys.argv[3]),
    env=json.loads(sys.argv[4]),
    policy=RestartPolicy(first_delay=float(sys.argv[5])),
)
sys.exit(asyncio.run(supervisor.run()))
"""

# A stand-in worker: shares the port, answers each connection with its PID, exits 0 on SIGTERM.
STAND_IN = """
import os, signal, socket, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen()
print(f"stand-in {os.environ['LIVESIGNAL_WORKER']} pid {os.getpid()} listening", file=sys.stderr,
      flush=True)
while True:
    connection, _ = listener.accept()
    connection.sendall(f"{os.getpid()}\\n".encode())
    connection.close()
"""

# A stand-in that ignores SIGTERM: the supervisor has to kill it.
STUBBORN = """
import os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
print(f"stubborn pid {os.getpid()} ready", file=sys.stderr, flush=True)
while True:
    signal.pause()
"""


# --- the parts without processes -----------------------------------------------------------


def test_restart_delay_doubles_and_restarts_are_bounded_per_window() -> None:
    policy = RestartPolicy(first_delay=0.5, max_delay=30.0, window=60.0, per_window=5)
    assert policy.delay([], now=100.0) == 0.5  # a first crash: back at once
    assert policy.delay([99.0], now=100.0) == 1.0
    assert policy.delay([97.0, 98.0, 99.0], now=100.0) == 4.0
    # The window holds 5 restarts: the next waits until the oldest of them is 60 s old.
    assert policy.delay([10.0, 11.0, 12.0, 13.0, 14.0], now=15.0) == 55.0
    unbounded = RestartPolicy(first_delay=0.5, max_delay=30.0, window=60.0, per_window=100)
    assert unbounded.delay([float(t) for t in range(50, 57)], now=59.0) == 30.0  # 64 > max
    # A worker quiet for a window starts over.
    assert policy.delay([10.0, 11.0, 12.0, 13.0, 14.0], now=80.0) == 0.5


def test_a_worker_learns_its_role_from_the_environment_once() -> None:
    environ = {WORKER_ENV: "2/3", "OTHER": "x"}
    assert take_worker_role(environ) == WorkerRole(2, 3, os.getppid())
    assert environ == {"OTHER": "x"}  # not passed on to anything the worker starts
    assert take_worker_role(environ) is None
    for bad in ("2", "0/2", "3/2", "a/b", "1/"):
        with pytest.raises(ValueError, match=WORKER_ENV):
            take_worker_role({WORKER_ENV: bad})


# --- start-up refusals of `livesignal serve --workers N` -------------------------------------


async def test_workers_with_the_memory_store_exit_2_before_binding_anything(
    tmp_path: Path,
) -> None:
    # The port is taken: a refusal that came after binding would be about the port.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        ran = await run_cli("serve", "--workers", "2", "--port", port)
        assert ran.code == 2, ran.stderr
        assert "server.workers = 2" in ran.stderr and 'store.backend = "redis"' in ran.stderr
        assert "cannot listen" not in ran.stderr
        in_file = config(tmp_path, "[server]\nworkers = 3\n")
        ran = await run_cli("serve", "--config", str(in_file), "--port", port)
        assert ran.code == 2 and "server.workers = 3" in ran.stderr, ran.stderr
        # --workers 1 overrides the file: one process, which finds the port taken (exit 1).
        ran = await run_cli("serve", "--config", str(in_file), "--workers", "1", "--port", port)
        assert ran.code == 1 and f"cannot listen on 127.0.0.1:{port}" in ran.stderr


async def test_workers_below_one_are_refused_by_name(tmp_path: Path) -> None:
    ran = await run_cli("serve", "--workers", "0", "--port", str(free_port()))
    assert ran.code == 2 and "server.workers" in ran.stderr, ran.stderr
    ran = await run_cli("serve", "--config", str(config(tmp_path, "[server]\nworkers = -1\n")))
    assert ran.code == 2 and "server.workers" in ran.stderr, ran.stderr


async def test_workers_on_a_port_held_without_sharing_exit_1_naming_it(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[store]\nbackend = "redis"\n[server]\nworkers = 2\n')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ran = await run_cli("serve", "--config", str(cfg), "--port", str(port))
    assert ran.code == 1, ran.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in ran.stderr
    assert "started (pid" not in ran.stderr  # checked before starting any worker


# --- the supervisor ------------------------------------------------------------------------


class Watched:
    """A subprocess whose stderr (and its children's) is read into `lines` as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode())
            self._new.set()
        self._new.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def pids(self) -> set[int]:
        return {int(pid) for pid in re.findall(r"pid (\d+)", self.log)}

    async def line(self, pattern: str, *, after: int = 0) -> re.Match[str]:
        """The first line from index `after` on matching `pattern`, waiting for it."""
        regex = re.compile(pattern)
        seen = after
        try:
            async with asyncio.timeout(START_DEADLINE):
                while True:
                    for line in self.lines[seen:]:
                        if match := regex.search(line):
                            return match
                    seen = len(self.lines)
                    if self._reader.done():
                        raise AssertionError(f"no line matching {pattern!r}:\n{self.log}")
                    self._new.clear()
                    await self._new.wait()
        except TimeoutError:
            raise AssertionError(f"no line matching {pattern!r} in time:\n{self.log}") from None

    async def exit_code(self) -> int:
        code = await asyncio.wait_for(self.proc.wait(), STOP_DEADLINE)
        await asyncio.wait_for(self._reader, STOP_DEADLINE)  # the workers' last lines too
        return code


@asynccontextmanager
async def supervising(
    command: list[str],
    count: int,
    *,
    stop_timeout: float = 5.0,
    env: dict[str, str] | None = None,
    first_delay: float = 0.1,
) -> AsyncIterator[Watched]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DRIVER,
        json.dumps(command),
        str(count),
        str(stop_timeout),
        json.dumps(env or {}),
        str(first_delay),
        cwd=REPO,
        env=clean_env(),
        stderr=asyncio.subprocess.PIPE,
    )
    watched = Watched(proc)
    try:
        yield watched
    finally:
        # Whatever the test did: the supervisor and every worker it logged end here.
        for pid in [proc.pid, *watched.pids()]:
            if not gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watched._reader, STOP_DEADLINE)


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts: it serves nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def until_gone(pids: set[int], deadline: float) -> None:
    end = time.monotonic() + deadline
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < end, f"still running: {[p for p in pids if not gone(p)]}"
        await asyncio.sleep(POLL)


async def answered_by(port: int) -> int | None:
    """Connect to the shared port: the PID of the stand-in that answered."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        line = await asyncio.wait_for(reader.readline(), 5.0)
    except OSError:
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return int(line) if line.strip() else None


async def answering(port: int, wanted: set[int]) -> set[int]:
    """Connect until every PID in `wanted` has answered (the kernel picks one per connection,
    by hashing the connection's addresses); every PID that answered."""
    seen: set[int] = set()
    for _ in range(300):  # 2 equally likely workers: all 300 to one has odds 2**-299
        if (pid := await answered_by(port)) is not None:
            seen.add(pid)
        if wanted <= seen:
            break
    return seen


async def test_workers_share_the_port_a_killed_one_is_restarted_and_sigterm_stops_all() -> None:
    port = free_port()
    async with supervising([sys.executable, "-c", STAND_IN, str(port)], 2) as sup:
        first = int((await sup.line(r"worker 1/2 started \(pid (\d+)\)"))[1])
        second = int((await sup.line(r"worker 2/2 started \(pid (\d+)\)"))[1])
        await sup.line(rf"stand-in 1/2 pid {first} listening")
        await sup.line(rf"stand-in 2/2 pid {second} listening")
        assert await answering(port, {first, second}) == {first, second}

        os.kill(first, signal.SIGKILL)
        died = await sup.line(rf"worker 1/2 \(pid {first}\) was killed by SIGKILL unasked")
        after = sup.lines.index(died.string)
        restarted = int((await sup.line(r"worker 1/2 started \(pid (\d+)\)", after=after))[1])
        await sup.line(rf"stand-in 1/2 pid {restarted} listening")
        assert await answering(port, {restarted, second}) == {restarted, second}

        os.kill(sup.proc.pid, signal.SIGTERM)
        assert await sup.exit_code() == 0, sup.log
        assert "all 2 workers stopped" in sup.log
        await until_gone({first, second, restarted}, 1.0)
        assert sup.log.count("started (pid") == 3  # one restart, none on the way out


async def test_a_worker_refusing_to_start_is_not_restarted() -> None:
    async with supervising([sys.executable, "-c", "import sys; sys.exit(2)"], 2) as sup:
        assert await sup.exit_code() == 2, sup.log
        assert "refused to start (exit 2): stopping the server" in sup.log
        assert sup.log.count("started (pid") == 2


async def test_a_stop_during_a_restart_backoff_starts_nothing_and_exits_0() -> None:
    crashing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    async with supervising(crashing, 1, first_delay=30.0) as sup:
        await sup.line(r"worker 1/1 \(pid \d+\) exited with code 3 unasked; restarting it in 30.0s")
        os.kill(sup.proc.pid, signal.SIGTERM)
        # The worker that crashed before the stop is not counted as stopping uncleanly.
        assert await sup.exit_code() == 0, sup.log
        assert sup.log.count("started (pid") == 1
        assert "all 1 workers stopped" in sup.log


async def test_a_worker_that_will_not_stop_is_killed_after_the_stop_timeout() -> None:
    async with supervising([sys.executable, "-c", STUBBORN], 1, stop_timeout=0.3) as sup:
        pid = int((await sup.line(r"stubborn pid (\d+) ready"))[1])
        os.kill(sup.proc.pid, signal.SIGINT)
        assert await sup.exit_code() == 1, sup.log
        assert "received SIGINT: stopping 1 workers" in sup.log
        assert "still running 0.3s after the stop signal: killing it" in sup.log
        assert "worker 1/1 was killed by SIGKILL while stopping" in sup.log
        assert gone(pid)


# --- real `livesignal serve` workers -------------------------------------------------------


def serve_command(cfg: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "livesignal", "serve", "--config", str(cfg), "--port", str(port)]


async def test_real_workers_share_the_port_and_the_supervisors_secrets(tmp_path: Path) -> None:
    # The memory store (each worker its own): enough to see them bind and answer. No
    # jwt_secret in the file: the workers take the one their supervisor hands them.
    port = free_port()
    cfg = config(tmp_path, "[server]\nworkers = 1\n")
    shared = {"LIVESIGNAL_SHARED_SECRETS": json.dumps({"auth.jwt_secret": SECRET})}
    async with supervising(serve_command(cfg, port), 2, env=shared) as sup:
        for index in (1, 2):
            await sup.line(rf"livesignal worker {index}/2 listening on http://127.0.0.1:{port}\n")
        token, _ = TokenCodec(SECRET, 3600).issue("alice", time.time())
        headers = {"Authorization": record_token(token)}
        async with aiohttp.ClientSession() as session:
            for _ in range(10):  # fresh connections, so both workers get some
                async with session.get(
                    f"http://127.0.0.1:{port}/client/user/profile",
                    headers={**headers, "Connection": "close"},
                ) as response:
                    assert response.status == 200
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    assert (response.status, await response.json()) == (200, {"status": "ready"})
        os.kill(sup.proc.pid, signal.SIGTERM)
        assert await sup.exit_code() == 0, sup.log
    assert "jwt_secret is empty" not in sup.log
    assert sup.log.count("shutting down") == 2
    for index in (1, 2):  # one listening line each
        assert sup.log.count(f"livesignal worker {index}/2 listening on") == 1


async def test_real_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\n')
    async with supervising(serve_command(cfg, port), 2) as sup:
        for index in (1, 2):
            await sup.line(rf"livesignal worker {index}/2 listening on http://127.0.0.1:{port}\n")
        workers = sup.pids()
        os.kill(sup.proc.pid, signal.SIGKILL)
        await sup.proc.wait()
        for index in (1, 2):
            await sup.line(rf"worker {index}/2: the supervisor \(pid {sup.proc.pid}\) is gone")
        await until_gone(workers, STOP_DEADLINE)
