"""PROTOCOL §1 in detail: the `livesignal` command's options, config sources and refusals, run
as real subprocesses (tests/cli.py). The headline promises are in tests/contract/test_running.py.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from livesignal.settings import CONFIG_ENV
from tests.cli import SECRET, clean_env, config, run_cli, serve, stop
from tests.ports import free_port

# --- token ---------------------------------------------------------------------------------


async def test_token_prints_only_a_jwt(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\ntoken_ttl = 1000\n')
    ran = await run_cli("token", "--user-id", "alice", "--config", str(cfg))
    assert ran.code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert len(lines) == 1 and ran.stdout == lines[0] + "\n"
    claims = jwt.decode(lines[0], SECRET, algorithms=["HS256"])
    assert (claims["UserId"], claims["Role"]) == ("alice", "")
    # auth.token_ttl from the file: 1000 s from now.
    assert abs(claims["exp"] - (time.time() + 1000)) <= 30


async def test_token_ttl_and_admin_role(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\n')
    ran = await run_cli(
        "token", "--user-id", "mod", "--config", str(cfg), "--ttl", "60", "--role", "admin"
    )
    assert ran.code == 0, ran.stderr
    claims = jwt.decode(ran.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["Role"] == "admin"
    issued = jwt.decode(
        (await run_cli("token", "--user-id", "mod", "--config", str(cfg))).stdout.strip(),
        SECRET,
        algorithms=["HS256"],
    )
    # The default ttl is auth.token_ttl (7 days); --ttl 60 is 60 s from about the same moment.
    assert abs((issued["exp"] - 604800) - (claims["exp"] - 60)) <= 5


async def test_token_reads_the_config_named_by_the_env_var(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\n')
    ran = await run_cli("token", "--user-id", "bob", env=clean_env(**{CONFIG_ENV: str(cfg)}))
    assert ran.code == 0, ran.stderr
    assert jwt.decode(ran.stdout.strip(), SECRET, algorithms=["HS256"])["UserId"] == "bob"


async def test_token_without_a_secret_exits_2_and_says_why(tmp_path: Path) -> None:
    ran = await run_cli("token", "--user-id", "alice")
    assert ran.code == 2
    assert ran.stdout == ""
    assert "jwt_secret" in ran.stderr
    empty = config(tmp_path, '[auth]\njwt_secret = ""\n')
    ran = await run_cli("token", "--user-id", "alice", "--config", str(empty))
    assert (ran.code, ran.stdout) == (2, "")
    assert "jwt_secret" in ran.stderr


async def test_token_with_an_unknown_config_key_names_it(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\njwt_secrett = "x"\n')
    ran = await run_cli("token", "--user-id", "alice", "--config", str(cfg))
    assert ran.code != 0 and ran.stdout == ""
    assert "auth.jwt_secrett" in ran.stderr


async def test_serve_answers_rest_with_a_cli_token_and_exits_0_on_sigterm(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\n[server]\nport = 1\n')
    port = free_port()  # --port overrides the file's port
    token = (await run_cli("token", "--user-id", "carol", "--config", str(cfg))).stdout.strip()
    async with serve("--config", str(cfg), "--port", str(port), port=port) as served:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/client/user/profile"
            async with session.get(url, headers={"Authorization": token}) as response:
                body = await response.json()
            assert (response.status, body["code"], body["data"]["user_id"]) == (200, 0, "carol")
            async with session.get(url, headers={"Authorization": "Bearer " + token}) as response:
                assert response.status == 200
            async with session.get(url) as response:
                assert response.status == 401
        code, log = await stop(served)
    assert code == 0, log
    assert SECRET not in log
    assert token not in log


async def test_serve_reads_the_config_named_by_the_env_var(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\n[server]\nport = {port}\n')
    async with serve(port=port, env=clean_env(**{CONFIG_ENV: str(cfg)})) as served:
        token = (await run_cli("token", "--user-id", "dave", "--config", str(cfg))).stdout
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/client/user/profile"
            async with session.get(url, headers={"Authorization": token.strip()}) as response:
                assert response.status == 200
        code, log = await stop(served)
    assert code == 0, log


async def test_serve_without_a_secret_warns_and_refuses_outside_tokens() -> None:
    port = free_port()
    async with serve("--host", "127.0.0.1", "--port", str(port), port=port) as served:
        assert any("jwt_secret" in line and "WARNING" in line for line in served.log)
        forged = jwt.encode({"UserId": "eve", "exp": 4_000_000_000}, SECRET, "HS256")
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/client/user/profile"
            async with session.get(url, headers={"Authorization": forged}) as response:
                assert response.status == 401
        code, log = await stop(served)
    assert code == 0, log


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("[server]\nprot = 8080\n", "server.prot"),
        ("[presense]\nheartbeat_interval = 5.0\n", "presense"),
        ('[stream]\nsecurity = "maybe"\n', "stream.security"),
        ('[store]\nbackend = "mongo"\n', "store.backend"),
    ],
)
async def test_serve_with_a_bad_config_exits_non_zero_naming_the_key(
    tmp_path: Path, text: str, name: str
) -> None:
    cfg = config(tmp_path, text)
    ran = await run_cli("serve", "--config", str(cfg), "--port", str(free_port()))
    assert ran.code != 0
    assert name in ran.stderr


async def test_serve_on_a_busy_port_exits_non_zero() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ran = await run_cli("serve", "--port", str(port))
    assert ran.code != 0
    assert str(port) in ran.stderr
