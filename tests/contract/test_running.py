"""PROTOCOL §1, black box: `livesignal serve` and `livesignal token` as an operator runs them.

The command's options and refusals in detail are tests/test_main.py; both run the command as a
real subprocess through tests/cli.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import jwt

from livesignal.client import SignalClient
from tests.cli import SECRET, config, run_cli, serve, stop
from tests.conftest import record_token
from tests.ports import free_port


async def test_token_command_prints_only_a_verifiable_jwt(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\ntoken_ttl = 120\n')
    before = int(time.time())
    ran = await run_cli("token", "--user-id", "u-1", "--config", str(cfg), "--role", "admin")
    assert (ran.code, ran.stderr) == (0, "")
    lines = ran.stdout.splitlines()
    assert len(lines) == 1 and ran.stdout == lines[0] + "\n"
    claims = jwt.decode(lines[0], SECRET, algorithms=["HS256"])
    assert claims["UserId"] == "u-1" and claims["Role"] == "admin"
    assert {"AppId", "DeviceId", "exp"} <= set(claims)
    assert before + 120 <= claims["exp"] <= int(time.time()) + 121  # auth.token_ttl


async def test_serve_with_no_config_listens_once_on_the_defaults_with_a_random_secret() -> None:
    """No config: built-in defaults (127.0.0.1), one line saying where it listens, and a
    warning that jwt_secret is random: a token signed with any other secret is refused."""
    port = free_port()
    async with serve("--port", str(port), port=port) as served:
        assert sum("listening" in line for line in served.log) == 1
        assert any("jwt_secret" in line and "WARNING" in line for line in served.log)
        forged = jwt.encode({"UserId": "eve", "exp": 4_000_000_000}, SECRET, "HS256")
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/client/user/profile"
            for headers in ({}, {"Authorization": forged}):
                async with session.get(url, headers=headers) as response:
                    assert response.status == 401
                    assert (await response.json())["code"] == 401


async def test_sigterm_closes_sockets_with_1001_and_exits_0(tmp_path: Path) -> None:
    """With a config, the server takes what `livesignal token` prints (flags override the
    file); SIGTERM closes its open sockets with 1001 (memory store) and exits 0, and no line of
    its log shows the secret or a token."""
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\n[server]\nport = 1\n')
    port = free_port()  # --port overrides the file's port
    ran = await run_cli("token", "--user-id", "carol", "--config", str(cfg))
    token = record_token(ran.stdout.strip())
    async with serve("--config", str(cfg), "--port", str(port), port=port) as served:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/client/user/profile"
            for authorization in (token, f"Bearer {token}"):
                async with session.get(url, headers={"Authorization": authorization}) as response:
                    body = await response.json()
                assert (response.status, body["code"], body["data"]["user_id"]) == (200, 0, "carol")
        client = await SignalClient.connect(f"ws://127.0.0.1:{port}/ws", token)
        try:
            code, log = await stop(served)
            assert await client.wait_closed(timeout=5) == 1001
        finally:
            await client.close()
    assert code == 0, log
    assert "shutting down" in log
    assert SECRET not in log and token not in log
