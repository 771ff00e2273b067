"""`livesignal serve` as a real process: the PK demo runs against it, and SIGTERM closes
sockets with 1001 and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from livesignal.client import SignalClient
from livesignal.settings import load_settings
from livesignal.signal.model.auth import TokenCodec
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "demo.toml"


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "livesignal",
            "serve",
            "--config",
            str(DEMO_CONFIG),
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 15
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if f"listening on http://127.0.0.1:{port}" in line:
            break
        assert line or process.poll() is None, "server exited before listening"
    else:
        process.kill()
        pytest.fail("server did not start listening")
    yield process, port
    if process.poll() is None:
        process.kill()
    process.wait()
    process.stderr.close()


def test_pk_demo_runs_to_completion(server: tuple[subprocess.Popen[str], int]) -> None:
    _, port = server
    demo = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "pk_demo.py"),
            "--config",
            str(DEMO_CONFIG),
            "--url",
            f"ws://127.0.0.1:{port}/ws",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert demo.returncode == 0, demo.stderr
    assert "PK demo complete" in demo.stdout
    assert "relay.invited" in demo.stdout and "status=6 reason='stopped'" in demo.stdout


async def test_sigterm_closes_sockets_1001_and_exits_0(
    server: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = server
    secret = load_settings(DEMO_CONFIG).auth.jwt_secret
    token, _ = TokenCodec(secret, 3600).issue("someone", time.time())
    client = await SignalClient.connect(f"ws://127.0.0.1:{port}/ws", token)
    process.send_signal(signal.SIGTERM)
    assert await client.wait_closed(timeout=5) == 1001
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, process.wait, 6) == 0
