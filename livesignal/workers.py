"""`livesignal serve --workers N`: a supervisor keeping N worker processes on one port.

Each worker is a whole `livesignal serve` process listening on the same host:port with
SO_REUSEPORT, so the kernel spreads connections between them and no process hands sockets to
another. The supervisor keeps no socket and serves nothing. It starts the workers (each told
it is worker i of N by WORKER_ENV, each in a session of its own), restarts one that dies unasked
(after a backoff, a bounded number of times a minute per worker), forwards SIGINT/SIGTERM to
all of them, kills those still running after the stop timeout, and returns 0 when every worker
exited cleanly. A worker whose supervisor is gone stops by itself (stop_when_orphaned).

A worker exiting with BOOT_FAILURE (the CLI's code for a configuration it refuses) is not
restarted: another try cannot help, so the supervisor stops the rest and returns that code.

The command is a parameter, so the supervision itself is tested with tiny stand-in workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

WORKER_ENV = "LIVESIGNAL_WORKER"  # "i/N" in the environment of worker i of N
BOOT_FAILURE = 2  # exit code of a worker that refuses its configuration: not restarted
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What a worker process knows of its place: worker `index` of `count`, and its parent."""

    index: int
    count: int
    supervisor_pid: int

    @property
    def label(self) -> str:
        return f"worker {self.index}/{self.count}"


def take_worker_role(environ: MutableMapping[str, str]) -> WorkerRole | None:
    """This process's WorkerRole, removing WORKER_ENV from `environ`; None when not a worker.

    ValueError when WORKER_ENV is not "i/N" with 1 <= i <= N.
    """
    value = environ.pop(WORKER_ENV, None)
    if value is None:
        return None
    index_text, sep, count_text = value.partition("/")
    if not sep or not index_text.isdigit() or not count_text.isdigit():
        raise ValueError(f"{WORKER_ENV}={value!r} is not 'i/N'")
    index, count = int(index_text), int(count_text)
    if not 1 <= index <= count:
        raise ValueError(f"{WORKER_ENV}={value!r}: i must be between 1 and N")
    return WorkerRole(index, count, os.getppid())


async def stop_when_orphaned(role: WorkerRole, stop: asyncio.Event, every: float = 1.0) -> None:
    """Set `stop` once this worker's supervisor is gone (killed with no chance to stop it).

    A worker runs in a session of its own, so nothing else would end it: an orphaned worker
    would keep serving its share of the port from a server that no longer exists.
    """
    while not stop.is_set():
        if os.getppid() != role.supervisor_pid:
            log.warning(
                "%s: the supervisor (pid %d) is gone; stopping", role.label, role.supervisor_pid
            )
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How soon a worker that died is started again.

    The delay doubles with each restart of that worker in the last `window` seconds (from
    `first_delay` up to `max_delay`), so a worker that crashed once comes back at once and a
    crash loop slows down; and no worker is restarted more than `per_window` times per window.
    """

    first_delay: float = 0.5
    max_delay: float = 30.0
    window: float = 60.0
    per_window: int = 5

    def delay(self, restarts: Sequence[float], now: float) -> float:
        """Seconds to wait before the next restart, given the times of the earlier ones."""
        recent = [at for at in restarts if now - at < self.window]
        delay = min(self.max_delay, self.first_delay * 2.0 ** len(recent))
        if len(recent) >= self.per_window:
            # The window holds per_window restarts: wait until the oldest of them leaves it.
            delay = max(delay, recent[-self.per_window] + self.window - now)
        return delay


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def check_port_shareable(host: str, port: int) -> None:
    """Raise OSError unless every address of host:port can be bound with SO_REUSEPORT now.

    What each worker will do, tried once before starting any: a port held by a process that
    does not share it fails here with one message, instead of in every worker, over and over.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)


class Supervisor:
    """Runs `count` copies of `command`, worker i with WORKER_ENV="i/count" and `env` added."""

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        *,
        stop_timeout: float,
        env: Mapping[str, str] | None = None,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError("a supervisor needs at least one worker")
        self._command = list(command)
        self._count = count
        self._stop_timeout = stop_timeout
        self._env = dict(env or {})
        self._policy = policy or RestartPolicy()
        self._clock = clock
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._codes: dict[int, int] = {}  # how each worker running at the stop exited
        self._stopping = False
        self._stop_signal = signal.SIGTERM
        self._failure = 0  # the code to exit with when the supervisor itself gave up
        self._stopped = asyncio.Event()

    def _label(self, index: int) -> str:
        return f"worker {index}/{self._count}"

    async def run(self) -> int:
        """Supervise until SIGINT/SIGTERM (or a worker's boot failure); the exit code."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            keepers = [
                asyncio.create_task(self._keep(index), name=f"livesignal-{self._label(index)}")
                for index in range(1, self._count + 1)
            ]
            stopped = asyncio.create_task(self._stopped.wait())
            await asyncio.wait([stopped, *keepers], return_when=asyncio.FIRST_COMPLETED)
            if not self._stopping:
                # A keeper ended without being asked: a bug here, not in a worker. Stop all.
                self._give_up(1)
            _, late = await asyncio.wait(keepers, timeout=self._stop_timeout)
            if late:
                for index, proc in sorted(self._procs.items()):
                    if proc.returncode is None:
                        log.warning(
                            "%s (pid %d) still running %.1fs after the stop signal: killing it",
                            self._label(index),
                            proc.pid,
                            self._stop_timeout,
                        )
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                await asyncio.wait(late)
            stopped.cancel()
            for keeper in keepers:
                if not keeper.cancelled() and keeper.exception() is not None:
                    log.error("supervising a worker failed", exc_info=keeper.exception())
                    self._failure = self._failure or 1
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
        if self._failure:
            return self._failure
        unclean = {i: code for i, code in sorted(self._codes.items()) if code != 0}
        for index, code in unclean.items():
            log.warning("%s %s while stopping", self._label(index), describe_exit(code))
        log.info("all %d workers stopped", self._count)
        return 1 if unclean else 0

    def _on_signal(self, signum: signal.Signals) -> None:
        if self._stopping:
            return
        log.info("received %s: stopping %d workers", signum.name, self._count)
        self._stop(signum)

    def _give_up(self, code: int) -> None:
        self._failure = self._failure or code
        self._stop(signal.SIGTERM)

    def _stop(self, signum: signal.Signals) -> None:
        self._stopping = True
        self._stop_signal = signum
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)
        self._stopped.set()

    async def _keep(self, index: int) -> None:
        """Keep worker `index` running until the supervisor stops."""
        restarts: list[float] = []
        while not self._stopping:
            try:
                proc = await self._spawn(index)
            except OSError as exc:
                log.error("cannot start %s: %s", self._label(index), exc)
                self._give_up(1)
                return
            code = await proc.wait()
            if self._stopping:
                self._codes[index] = code
                return
            if code == BOOT_FAILURE:
                log.error(
                    "%s (pid %d) refused to start (exit %d): stopping the server",
                    self._label(index),
                    proc.pid,
                    code,
                )
                self._give_up(code)
                return
            now = self._clock()
            restarts = [at for at in restarts if now - at < self._policy.window]
            delay = self._policy.delay(restarts, now)
            log.error(
                "%s (pid %d) %s unasked; restarting it in %.1fs",
                self._label(index),
                proc.pid,
                describe_exit(code),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)
            restarts.append(self._clock())

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        env = {**os.environ, **self._env, WORKER_ENV: f"{index}/{self._count}"}
        # A session of its own: a terminal's Ctrl-C reaches the supervisor alone, which
        # forwards it once (a worker must not get it twice, the second time mid-exit).
        proc = await asyncio.create_subprocess_exec(*self._command, env=env, start_new_session=True)
        self._procs[index] = proc
        log.info("%s started (pid %d)", self._label(index), proc.pid)
        if self._stopping:  # the stop came while this worker was being started
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self._stop_signal)
        return proc
