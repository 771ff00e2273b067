"""PROTOCOL §1 in detail: the `livesignal` command's options, config sources and refusals, run
as real subprocesses (tests/cli.py). The headline promises are in tests/contract/test_running.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import jwt
import pytest

from livesignal.settings import CONFIG_ENV
from tests.cli import SECRET, clean_env, config, run_cli, serve
from tests.ports import free_port

# --- token ---------------------------------------------------------------------------------


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
    assert issued["Role"] == ""  # no --role: a plain user
    # The default ttl is auth.token_ttl (7 days); --ttl 60 is 60 s from about the same moment.
    assert abs((issued["exp"] - 604800) - (claims["exp"] - 60)) <= 5


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


async def test_serve_and_token_read_the_config_named_by_the_env_var(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\n[server]\nport = {port}\n')
    env = clean_env(**{CONFIG_ENV: str(cfg)})
    async with serve(port=port, env=env):
        ran = await run_cli("token", "--user-id", "dave", env=env)
        assert ran.code == 0, ran.stderr
        token = ran.stdout.strip()
        assert jwt.decode(token, SECRET, algorithms=["HS256"])["UserId"] == "dave"
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/client/user/profile"
            async with session.get(url, headers={"Authorization": token}) as response:
                assert response.status == 200


@pytest.mark.parametrize(
    ("text", "name"),
    # What is refused, and how it is named, is tests/test_settings.py; here: that `serve`
    # stops on it and names it.
    [("[server]\nprot = 8080\n", "server.prot")],
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


async def test_token_refuses_an_empty_user_id(tmp_path: Path) -> None:
    cfg = config(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\n')
    ran = await run_cli("token", "--user-id", "", "--config", str(cfg))
    assert (ran.code, ran.stdout) == (2, "") and "user-id" in ran.stderr, ran.stderr
