"""PROTOCOL §1, black box: `livesignal serve` and `livesignal token` as an operator runs them.

The command's options in detail are tests/test_main.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import jwt

from tests.conftest import JWT_SECRET
from tests.ports import free_port

# --- 1. the `livesignal` command ------------------------------------------------------------------


def test_token_command_prints_only_a_verifiable_jwt(tmp_path: Any) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[auth]\njwt_secret = "{JWT_SECRET}"\ntoken_ttl = 120\n')
    env = {k: v for k, v in os.environ.items() if k != "LIVESIGNAL_CONFIG"}
    before = int(time.time())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "livesignal",
            "token",
            "--user-id",
            "u-1",
            "--config",
            str(config),
            "--role",
            "admin",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    claims = jwt.decode(lines[0], JWT_SECRET, algorithms=["HS256"])
    assert claims["UserId"] == "u-1" and claims["Role"] == "admin"
    assert {"AppId", "DeviceId", "exp"} <= set(claims)
    assert before + 120 <= claims["exp"] <= int(time.time()) + 121
    no_secret = subprocess.run(
        [sys.executable, "-m", "livesignal", "token", "--user-id", "u-1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert no_secret.returncode == 2 and no_secret.stdout == ""
    assert "jwt_secret" in no_secret.stderr


async def test_serve_defaults_log_one_listen_line_and_sigterm_exits_0(tmp_path: Any) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LIVESIGNAL_CONFIG"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livesignal",
        "serve",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stderr is not None
        seen: list[str] = []
        async with asyncio.timeout(15):
            while not any(f"127.0.0.1:{port}" in line for line in seen):
                seen.append((await process.stderr.readline()).decode())
        assert sum("listening" in line for line in seen) == 1
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/client/user/profile") as response:
                assert response.status == 401
                assert (await response.json())["code"] == 401
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_token_refuses_an_empty_user_id(tmp_path: Any) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[auth]\njwt_secret = "{JWT_SECRET}"\n')
    ran = subprocess.run(
        [sys.executable, "-m", "livesignal", "token", "--user-id", "", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ran.returncode == 2 and ran.stdout == "" and "user-id" in ran.stderr
