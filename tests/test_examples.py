"""The examples/ scripts run to completion against `livesignal serve` (a real process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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
