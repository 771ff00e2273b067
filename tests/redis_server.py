"""A real redis-server for the tests: a subprocess on a free loopback port, stopped by PID.

Fixtures (registered for the whole suite through `pytest_plugins` in tests/conftest.py):

- `redis_server` (session): one server, append-only file off (it is never restarted).
- `redis_url` (function): that server's URL after FLUSHALL. Tests are isolated by flushing,
  not by database numbers: pub/sub channels are global to a server whatever the db, so two
  tests on db 0 and db 1 would still hear each other's events, and there are only 16 dbs.
  The suite runs tests one at a time (no xdist), so a flush at set-up is enough.
- `own_redis` (function): a server of the test's own, AOF on with `appendfsync always`, for
  tests that stop, kill or restart Redis.

The methods here block (a start or stop takes milliseconds): they also work in the sync
session fixture, where no event loop runs.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_DEADLINE = 10.0  # an AOF replay answers -LOADING until done
STOP_DEADLINE = 10.0


def require_redis_server() -> str:
    """The redis-server binary; fails the test (never skips) when it is not installed."""
    if not Path(REDIS_SERVER).is_file():
        pytest.fail(
            "redis-server not found: install the Debian package redis-server "
            "(scripts/test.sh does it)",
            pytrace=False,
        )
    return REDIS_SERVER


def redis_command(port: int, *args: str, timeout: float = 2.0) -> str:
    """Send one command over a fresh connection; its first reply line (`+PONG`, `-LOADING..`)."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("redis-server closed the connection")
            reply += chunk
    return reply.decode(errors="replace").strip()


class RedisServer:
    """One redis-server process; `start()` after `stop()`/`kill()` reuses its port and dir."""

    def __init__(self, directory: Path, *, appendonly: bool = True) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (again) on the same port and dir; returns once it answers PING."""
        assert not self.running, "redis-server is already running"
        args = [require_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--logfile", str(self.log_path), "--save", ""]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"]
        args += ["--protected-mode", "yes"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self._wait_for_pong()

    def _wait_for_pong(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        reply = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"redis-server exited with {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                reply = redis_command(self.port, "PING")
                if reply == "+PONG":
                    return
            except OSError as exc:
                reply = repr(exc)
            time.sleep(0.01)  # poll interval, bounded by the deadline
        self.kill()
        raise AssertionError(f"redis-server gave no PONG in {START_DEADLINE} s ({reply})")

    def ping(self) -> bool:
        try:
            return redis_command(self.port, "PING", timeout=1.0) == "+PONG"
        except OSError:
            return False

    def flushall(self) -> None:
        reply = redis_command(self.port, "FLUSHALL")
        assert reply == "+OK", reply

    def stop(self) -> int:
        """SIGTERM by PID (Redis fsyncs its AOF and exits); its exit code."""
        return self._end(signal.SIGTERM)

    def kill(self) -> int:
        """SIGKILL by PID: no shutdown work at all."""
        return self._end(signal.SIGKILL)

    def _end(self, signum: int) -> int:
        process = self.process
        assert process is not None, "redis-server was never started"
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_DEADLINE)
        return process.returncode


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fresh_url(server: RedisServer) -> str:
    """The server's URL once it is running (started again if a test stopped it) and empty."""
    if not server.running:
        server.start()
    server.flushall()
    return server.url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return fresh_url(redis_server)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        if server.running:
            server.stop()
