"""Several real `livesignal serve` processes, each stopped by its own PID.

`make_cluster(n, overrides=None, *, redis_url=None)` (fixture) starts n nodes on free
loopback ports and returns their Cluster; every node it started is ended at teardown, even
when the test failed. With `redis_url` the nodes share that Redis (store.backend "redis");
without it each node is a separate memory-backend server. `overrides` maps TOML section to
keys and is applied to every node on top of the defaults below.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp
import pytest

from livesignal.settings import CONFIG_ENV
from livesignal.signal.model.auth import TokenCodec
from tests.conftest import NO_RATE_LIMITS, record_token
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent
SECRET = "cluster-test-secret-0123456789abcdef-xyz"
START_DEADLINE = 20.0
STOP_DEADLINE = 10.0
POLL = 0.02  # seconds between checks of a deadline-bounded wait

Overrides = dict[str, dict[str, Any]]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_text(config: Overrides) -> str:
    """`[section]` tables of simple values; checked by reading it back with tomllib."""
    lines: list[str] = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    text = "\n".join(lines)
    assert tomllib.loads(text) == config, text
    return text


def node_config(port: int, redis_url: str | None, overrides: Overrides | None) -> Overrides:
    config: Overrides = {
        "server": {"host": "127.0.0.1", "port": port},
        "auth": {"jwt_secret": SECRET},
        # Fast presence: a member held by a dead node times out after 1 s.
        "presence": {"heartbeat_interval": 0.5, "missed_heartbeats": 2},
        "limits": dict(NO_RATE_LIMITS),
    }
    if redis_url is not None:
        config["store"] = {"backend": "redis", "redis_url": redis_url}
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    return config


class Node:
    """One `python -m livesignal serve --config <file>` process; its log in one file."""

    def __init__(
        self,
        name: str,
        directory: Path,
        config: Overrides,
        args: Sequence[str],
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.port: int = config["server"]["port"]
        self.config_path = directory / f"{name}.toml"
        self.log_path = directory / f"{name}.log"
        self.config_path.write_text(toml_text(config))
        self._log: IO[bytes] = self.log_path.open("wb")
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        command = [sys.executable, "-m", "livesignal", "serve", "--config", str(self.config_path)]
        self.process = subprocess.Popen(
            [*command, *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def token(self, user_id: str, role: str = "") -> str:
        """A client JWT every node of the cluster accepts (they share the secret)."""
        secret = self.config["auth"]["jwt_secret"]
        token, _ = TokenCodec(secret, 3600).issue(user_id, time.time(), role=role)
        return record_token(token)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def status(self, path: str) -> int | None:
        """The HTTP status of `GET path`, or None when nothing answers on the port."""
        timeout = aiohttp.ClientTimeout(total=2.0)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(self.base_url + path) as response:
                    return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def wait_for_status(
        self, path: str, statuses: set[int], deadline: float = START_DEADLINE
    ) -> int:
        """Poll `GET path` until its status is one of `statuses`; fails after `deadline` s."""
        until = time.monotonic() + deadline
        last: int | None = None
        while time.monotonic() < until:
            if not self.running:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_text()}"
                )
            last = await self.status(path)
            if last in statuses:
                return last
            await asyncio.sleep(POLL)
        raise AssertionError(
            f"{self.name}: GET {path} gave {last}, not {sorted(statuses)}, within {deadline} s"
            f":\n{self.log_text()}"
        )

    async def wait_ready(self) -> None:
        """Until GET /healthz answers 200: the process serves (its store may still be down)."""
        await self.wait_for_status("/healthz", {200})

    async def sigkill(self) -> int:
        """SIGKILL by PID: no shutdown work, sockets drop. Its exit status (-9)."""
        code = await self._end(signal.SIGKILL)
        assert code is not None, f"{self.name} (pid {self.pid}) survived SIGKILL"
        return code

    async def stop(self) -> int:
        """SIGTERM by PID, up to STOP_DEADLINE s for a clean exit, then SIGKILL."""
        code = await self._end(signal.SIGTERM)
        if code is None:
            code = await self._end(signal.SIGKILL)
        assert code is not None, f"{self.name} (pid {self.pid}) survived SIGKILL"
        return code

    async def _end(self, signum: int) -> int | None:
        if self.running:
            self.process.send_signal(signum)
        until = time.monotonic() + STOP_DEADLINE
        while self.running and time.monotonic() < until:
            await asyncio.sleep(POLL)
        code = self.process.poll()
        if code is not None:
            self._log.close()
        return code


class Cluster:
    """The nodes of one test; `async with` (or the `make_cluster` fixture) ends them all."""

    def __init__(
        self,
        directory: Path,
        *,
        redis_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.redis_url = redis_url
        self.env = env
        self.nodes: list[Node] = []
        directory.mkdir(parents=True, exist_ok=True)

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    async def start(
        self, n: int = 1, overrides: Overrides | None = None, args: Sequence[str] = ()
    ) -> list[Node]:
        """Start n more nodes at once, each on its own free port; returns once all serve."""
        new: list[Node] = []
        for _ in range(n):
            config = node_config(free_port(), self.redis_url, overrides)
            node = Node(f"node{len(self.nodes)}", self.directory, config, args, self.env)
            self.nodes.append(node)  # appended first: close() ends it even if it never serves
            new.append(node)
        try:
            async with asyncio.TaskGroup() as group:
                for node in new:
                    group.create_task(node.wait_ready())
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first node's reason, log included
        return new

    async def close(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


ClusterFactory = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """make_cluster(n, overrides=None, *, redis_url=None, args=()) -> a started Cluster."""
    clusters: list[Cluster] = []

    async def make(
        n: int,
        overrides: Overrides | None = None,
        *,
        redis_url: str | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Cluster:
        directory = tmp_path / f"cluster{len(clusters)}"
        cluster = Cluster(directory, redis_url=redis_url, env=env)
        clusters.append(cluster)
        await cluster.start(n, overrides, args)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            await cluster.close()
