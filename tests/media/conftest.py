"""Fixtures for the media gateway tests: the app, loopback-only ICE, nginx-rtmp and ffmpeg.

Real servers only: nginx (with libnginx-mod-rtmp) rendered from config/nginx-rtmp.conf on
free loopback ports, and ffmpeg as the RTMP pusher/player. Both are stopped by PID.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from livesignal.media.http.mount import add_media_routes
from livesignal.settings import RtcSettings, Settings, StreamSettings
from livesignal.signal.model.auth import RtcTokenCodec, StreamUrls
from livesignal.signal.model.clock import SystemClock
from tests.ports import free_port

from ._servers import NGINX, RTMP_MODULE, Nginx, render_nginx_conf, stop_process


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice offers every interface address except 127.0.0.1. Pin both test peers and the
    # gateway to loopback: traffic stays on 127.0.0.1 and the tests also run in containers
    # that have no other interface.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
def rtmp_port() -> int:
    return free_port()


@pytest.fixture
def settings(rtmp_port: int) -> Settings:
    base = f"rtmp://127.0.0.1:{rtmp_port}/live"
    return Settings(
        stream=StreamSettings(
            publish_base=base,
            rtmp_play_base=base,
            security="expiry",
            publish_key=secrets.token_urlsafe(16),
            publish_ttl=600,
        ),
        rtc=RtcSettings(access_key="test-ak", secret_key=secrets.token_urlsafe(24)),
    )


@pytest.fixture
def tokens(settings: Settings) -> RtcTokenCodec:
    return RtcTokenCodec(settings.rtc)


@pytest.fixture
def stream_urls(settings: Settings) -> StreamUrls:
    return StreamUrls(settings.stream, settings.rtc)


@pytest.fixture
def token_for(tokens: RtcTokenCodec) -> Callable[[str, str], str]:
    def issue(room: str, user: str) -> str:
        return tokens.issue(room, user, time.time())

    return issue


@pytest.fixture
def media_app(settings: Settings) -> web.Application:
    app = web.Application()
    add_media_routes(app, settings, SystemClock())
    return app


@pytest.fixture
async def client(
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
    media_app: web.Application,
) -> TestClient[Any, Any]:
    return await aiohttp_client(media_app)


@pytest.fixture
async def nginx(
    client: TestClient[Any, Any], rtmp_port: int, tmp_path: Path
) -> AsyncIterator[Nginx]:
    """nginx-rtmp whose on_publish calls the test app; started and stopped by PID."""
    hls_dir = tmp_path / "hls"
    hls_dir.mkdir()
    conf = tmp_path / "nginx.conf"
    app_port = client.server.port
    assert app_port is not None
    conf.write_text(render_nginx_conf(rtmp_port, free_port(), app_port, hls_dir))
    error_log = tmp_path / "error.log"
    directives = f"daemon off; pid {tmp_path / 'nginx.pid'};"
    if os.geteuid() == 0:
        directives += " user root;"  # workers must write HLS into this test's tmp_path
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(conf), "-e", str(error_log), "-g", directives],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Nginx(process, rtmp_port, error_log)
    try:
        deadline = time.monotonic() + 5
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited {process.returncode}:\n{server.log()}")
            try:
                with socket.create_connection(("127.0.0.1", rtmp_port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen:\n{server.log()}") from None
                await asyncio.sleep(0.02)
        yield server
    finally:
        stop_process(process, signal.SIGTERM)


@pytest.fixture
def processes() -> Iterator[Callable[[list[str]], subprocess.Popen[bytes]]]:
    """Start helper processes (ffmpeg, ffprobe); each is stopped by PID at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        started.append(process)
        return process

    yield start
    for process in started:
        stop_process(process)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def rtmp_tools() -> None:
    """Fail, never skip, when the real RTMP tools are missing: scripts/test.sh installs them."""
    missing = [
        name
        for name, present in (
            ("nginx", Path(NGINX).exists()),
            ("libnginx-mod-rtmp", RTMP_MODULE.exists()),
            ("ffmpeg", shutil.which("ffmpeg") is not None),
        )
        if not present
    ]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/test.sh, which installs them")
