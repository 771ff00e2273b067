"""`livesignal` (`python -m livesignal`) as a real subprocess, for the tests of PROTOCOL §1 and
of the servers they start: run a command to its end, or serve until stopped. Every process
started here is ended by its own PID; waits are deadlines, never sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from livesignal.settings import CONFIG_ENV

REPO = Path(__file__).resolve().parent.parent
SECRET = "cli-test-secret-0123456789abcdef-xyz"
START_DEADLINE = 20.0
STOP_DEADLINE = 5.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    env.update(extra)
    return env


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


async def run_cli(*args: str, env: dict[str, str] | None = None) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livesignal",
        *args,
        cwd=REPO,
        env=env if env is not None else clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), START_DEADLINE)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "livesignal.toml"
    path.write_text(text)
    return path


# --- serve ---------------------------------------------------------------------------------


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    port: int
    log: list[str]


async def _read_until(proc: asyncio.subprocess.Process, log: list[str], needle: str) -> None:
    assert proc.stderr is not None
    while True:
        line = await proc.stderr.readline()
        if not line:
            raise AssertionError(f"server exited before logging {needle!r}:\n" + "".join(log))
        log.append(line.decode())
        if needle in log[-1]:
            return


@asynccontextmanager
async def serve(*args: str, port: int, env: dict[str, str] | None = None) -> AsyncIterator[Served]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livesignal",
        "serve",
        *args,
        cwd=REPO,
        env=env if env is not None else clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    try:
        await asyncio.wait_for(
            _read_until(proc, log, f"listening on http://127.0.0.1:{port}"), START_DEADLINE
        )
        yield Served(proc, port, log)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
        await proc.communicate()


async def stop(served: Served) -> tuple[int, str]:
    """SIGTERM by PID; the exit code and the rest of the log, within the 5 s grace."""
    os.kill(served.proc.pid, signal.SIGTERM)
    _, err = await asyncio.wait_for(served.proc.communicate(), STOP_DEADLINE)
    assert served.proc.returncode is not None
    return served.proc.returncode, "".join(served.log) + err.decode()
