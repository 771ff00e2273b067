"""The servers under test: livesignal (the working tree's, with the bench's config),
python-socketio 5 on aiohttp and Node socket.io 4; how to start each on a free loopback port
(ended by PID on the way out), why one is skipped, and how rooms are made on each.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import aiohttp
import orjson

from bench.common import free_port, running_process, running_server, token
from bench.loadgen.chat import Room
from bench.loadgen.wire import Dialect, Livesignal, SocketIO

ROOT = Path(__file__).resolve().parent.parent
COMPARE = ROOT / "bench" / "compare"
NODE_DIR = COMPARE / "node"
LIVESIGNAL, PYTHON_SOCKETIO, NODE = "livesignal", "python-socketio", "node"


@dataclass(frozen=True)
class Target:
    """A running server."""

    label: str
    family: str
    dialect: Dialect
    pid: int
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Candidate:
    """A server the bench can start (or says why it cannot: `skip`)."""

    label: str
    family: str
    toml: str = ""  # livesignal: config on top of the bench's
    skip: str = ""

    @contextmanager
    def start(self, ping_interval: float | None = None, toml: str = "") -> Iterator[Target]:
        """Run it; `ping_interval` seconds between the server's pings (None: its default)."""
        if self.family == LIVESIGNAL:
            extra = self.toml + toml
            if ping_interval is not None:
                extra += f"[presence]\nheartbeat_interval = {ping_interval}\n"
            with running_server(extra) as server:
                yield Target(self.label, self.family, Livesignal(), server.process.pid, server.port)
            return
        port = free_port()
        if self.family == PYTHON_SOCKETIO:
            argv = [sys.executable, str(COMPARE / "socketio_server.py"), str(port)]
            argv += [str(ping_interval)] if ping_interval is not None else []
            cwd = None
        else:
            argv = [shutil.which("node") or "node", str(NODE_DIR / "server.js"), str(port)]
            argv += [str(int(ping_interval * 1000))] if ping_interval is not None else []
            cwd = NODE_DIR
        with running_process(argv, port, cwd=cwd) as process:
            yield Target(self.label, self.family, SocketIO(), process.pid, port)


def livesignal_default_flush() -> float:
    from livesignal.settings import WsSettings

    return WsSettings().flush_interval


def candidates() -> list[Candidate]:
    """livesignal with its defaults and with flush_interval = 0, python-socketio, Node."""
    default = livesignal_default_flush()
    found = [Candidate(f"livesignal (defaults: flush_interval = {default:g})", LIVESIGNAL)]
    if default != 0:
        found.append(
            Candidate("livesignal (flush_interval = 0)", LIVESIGNAL, "[ws]\nflush_interval = 0\n")
        )
    try:
        found.append(
            Candidate(f"python-socketio {version('python-socketio')} (aiohttp)", PYTHON_SOCKETIO)
        )
    except PackageNotFoundError:
        found.append(
            Candidate(
                "python-socketio", PYTHON_SOCKETIO, skip="not installed: pip install -e '.[bench]'"
            )
        )
    found.append(node_candidate())
    return found


def node_candidate() -> Candidate:
    node = shutil.which("node")
    if node is None:
        return Candidate("Node socket.io", NODE, skip="node is not installed")
    package = NODE_DIR / "node_modules" / "socket.io" / "package.json"
    if not package.is_file():
        return Candidate(
            "Node socket.io", NODE, skip="run `npm install --prefix bench/compare/node` first"
        )
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    socketio_version = orjson.loads(package.read_bytes())["version"]
    return Candidate(f"Node socket.io {socketio_version} (node {node_version.strip()})", NODE)


async def make_rooms(target: Target, count: int, sockets: int, prefix: str) -> tuple[Room, ...]:
    """`count` rooms of `sockets` sockets each. livesignal: created and started over REST by
    one anchor each (the anchor's socket is then the room's sender); socket.io: names."""
    if target.family != LIVESIGNAL:
        return tuple(Room(f"{prefix}{r}", f"{prefix}{r}-anchor", sockets) for r in range(count))
    gate = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(target.http) as http:

        async def one(r: int) -> Room:
            anchor = f"{prefix}{r}-anchor"
            headers = {"Authorization": token(anchor)}
            async with gate:
                async with http.post(
                    "/client/live/room/instance", json={"title": "bench"}, headers=headers
                ) as response:
                    body = await response.json()
                if body.get("code") != 0:
                    raise RuntimeError(f"room create failed: {body}")
                live_id = str(body["data"]["live_id"])
                async with http.put(f"/client/live/room/{live_id}", headers=headers) as response:
                    body = await response.json()
                if body.get("code") != 0:
                    raise RuntimeError(f"room start failed: {body}")
            return Room(live_id, anchor, sockets)

        return tuple(await asyncio.gather(*(one(r) for r in range(count))))
