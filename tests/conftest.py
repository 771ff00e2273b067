"""Shared fixtures: a real livesignal server on a free loopback port, and a REST caller."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner

from livesignal.app import create_app
from livesignal.http.appkeys import SERVICES
from livesignal.http.server import GuardedAppRunner
from livesignal.settings import Settings, settings_from_mapping
from livesignal.signal.model.auth import RtcTokenCodec
from livesignal.signal.model.clock import Clock, ManualClock, SystemClock
from livesignal.signal.services.wiring import Services

# Fixtures for real redis-server and multi-node `livesignal serve` tests: redis_server,
# redis_url, own_redis (tests/redis_server.py) and make_cluster (tests/cluster.py).
pytest_plugins = ("tests.redis_server", "tests.cluster")

JWT_SECRET = "test-secret-0123456789abcdef-0123456789"


# The harness's clock is usually a ManualClock, under which token buckets never refill: rates
# are off unless a test turns them on (the counts of PROTOCOL §7 keep their defaults).
NO_RATE_LIMITS = {"requests_per_second": 0, "chat_per_second": 0, "relay_starts_per_minute": 0}


def make_settings(overrides: dict[str, dict[str, Any]] | None = None) -> Settings:
    raw: dict[str, dict[str, Any]] = {
        "auth": {"jwt_secret": JWT_SECRET},
        "limits": dict(NO_RATE_LIMITS),
    }
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    return settings_from_mapping(copy.deepcopy(raw))


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> int:
        return int(self.body["code"])

    @property
    def data(self) -> Any:
        return self.body.get("data")


@dataclass
class Harness:
    """One running server and what a test needs to talk to it."""

    server: TestServer
    session: aiohttp.ClientSession
    settings: Settings
    clock: Clock

    @property
    def services(self) -> Services:
        return self.server.app[SERVICES]

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/ws"

    def token(self, user_id: str, *, role: str = "", ttl: int | None = None) -> str:
        token, _ = self.services.tokens.issue(user_id, self.clock.now(), ttl=ttl, role=role)
        return record_token(token)

    async def call(
        self,
        method: str,
        path: str,
        user: str | None = None,
        *,
        token: str | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One REST call as `user` (a fresh token) or with an explicit `token`."""
        sent = dict(headers or {})
        if token is None and user is not None:
            token = self.token(user)
        if token is not None:
            sent["Authorization"] = token
        body = orjson.dumps(json) if json is not None else data
        if json is not None:
            sent["Content-Type"] = "application/json"
        async with self.session.request(
            method, self.base_url + path, data=body, params=params, headers=sent
        ) as response:
            raw = await response.read()
            parsed = orjson.loads(raw) if raw else {}
            return Reply(response.status, parsed, dict(response.headers))

    async def sweep(self) -> None:
        await self.services.sweeper.sweep()

    def advance(self, seconds: float) -> None:
        """Jump the fake clock: open sockets get no chance to answer pings on the way."""
        assert isinstance(self.clock, ManualClock), "advance() needs a ManualClock harness"
        self.clock.advance(seconds)

    async def pass_time(self, seconds: float) -> None:
        """Move the fake clock one ping interval at a time, letting live sockets answer each
        ping, as time passes for clients that stay connected."""
        step = self.settings.presence.heartbeat_interval
        while seconds > 0:
            self.advance(min(step, seconds))
            seconds -= step
            await asyncio.sleep(0.005)


HarnessFactory = Callable[..., Awaitable[Harness]]


# --- the backend matrix --------------------------------------------------------------------------
#
# A server test (one that uses `harness`, `make_harness` or `connect`) runs on ONE backend: the
# embedded memory store, unless LIVESIGNAL_TEST_BACKEND=memory|redis names another. That is
# enough for what is decided before the store is touched: the HTTP layer, tokens, validation,
# CORS, the envelope, URL signing, frame parsing.
#
# A test whose behaviour depends on the store or the broker is marked
#
#     @pytest.mark.both_backends
#
# and runs once per backend, collected as `[memory]` and `[redis]` (a real redis-server the
# suite starts, tests/redis_server.py): joins and presence, relay state, history and resume,
# timers and sweeps, room fan-out. Redis makes every step asynchronous, fans out through
# pub/sub and has presence, lease and history code of its own, so whatever reaches those runs
# on both. LIVESIGNAL_TEST_BACKEND still runs marked tests on that one backend only.
#
# The marker is read by pytest_generate_tests below, which parametrizes the `backend` fixture;
# a test cannot pick its backend any other way, so no test is collected as `[redis]` while it
# runs on memory.

BACKENDS = ("memory", "redis")
FORCED_BACKEND = os.environ.get("LIVESIGNAL_TEST_BACKEND") or None


def pytest_configure(config: pytest.Config) -> None:
    if FORCED_BACKEND is not None and FORCED_BACKEND not in BACKENDS:
        raise pytest.UsageError(
            f"LIVESIGNAL_TEST_BACKEND={FORCED_BACKEND!r}: expected one of {', '.join(BACKENDS)}"
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marked = metafunc.definition.get_closest_marker("both_backends") is not None
    if "backend" not in metafunc.fixturenames:
        if marked:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: both_backends on a test that starts no server "
                "(it uses neither backend, harness, make_harness nor connect)"
            )
        return
    if marked:
        metafunc.parametrize("backend", [FORCED_BACKEND] if FORCED_BACKEND else BACKENDS)


@pytest.fixture
def backend() -> str:
    """The backend of a test not marked both_backends (marked ones get it as a parameter)."""
    return FORCED_BACKEND or "memory"


@pytest.fixture
async def make_harness(
    request: pytest.FixtureRequest, backend: str
) -> AsyncIterator[HarnessFactory]:
    """make_harness(overrides=None, manual_clock=True, run_sweeper=False) -> Harness, on the
    test's backend.

    With a manual clock nothing expires until the test advances the clock and sweeps.
    """
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def make(
        overrides: dict[str, dict[str, Any]] | None = None,
        *,
        manual_clock: bool = True,
        run_sweeper: bool = False,
    ) -> Harness:
        overrides = copy.deepcopy(overrides or {})
        if backend == "redis":
            store = overrides.setdefault("store", {})
            store.update(backend="redis", redis_url=request.getfixturevalue("redis_url"))
        settings = make_settings(overrides)
        clock: Clock = ManualClock() if manual_clock else SystemClock()
        app = create_app(settings, clock=clock, run_sweeper=run_sweeper)
        server = LivesignalTestServer(app, settings)
        await server.start_server()
        session = aiohttp.ClientSession()
        started.append((server, session))
        return Harness(server=server, session=session, settings=settings, clock=clock)

    yield make
    for server, session in reversed(started):
        await session.close()
        await server.close()


class LivesignalTestServer(TestServer):
    """aiohttp's TestServer on the runner `livesignal serve` uses (GuardedAppRunner): its
    header timeouts, and /ws upgrades handed over to the WebSocket layer."""

    def __init__(self, app: web.Application, settings: Settings) -> None:
        super().__init__(app, host="127.0.0.1")
        self._settings = settings

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return GuardedAppRunner(
            self.app,
            header_timeout=self._settings.limits.header_timeout,
            idle_timeout=self._settings.limits.idle_timeout,
        )


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()


if TYPE_CHECKING:
    from livesignal.client import SignalClient

Connect = Callable[..., Awaitable["SignalClient"]]


async def live_room(client: SignalClient) -> str:
    """Create a room as the client's user and start it; its live_id."""
    room = await client.request("room.create", title="room")
    started = await client.request("room.start", live_id=room["live_id"])
    assert started["live_status"] == 1
    return str(room["live_id"])


@pytest.fixture
async def connect(make_harness: HarnessFactory) -> AsyncIterator[Connect]:
    """connect(harness, user, **kw) -> SignalClient: a real WebSocket client, closed after."""
    from livesignal.client import SignalClient

    clients: list[SignalClient] = []

    async def open_client(h: Harness, user: str, **kwargs: Any) -> SignalClient:
        client = await SignalClient.connect(h.ws_url, h.token(user), **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


# --- no token in any log line (PROTOCOL §2), checked over the whole session ----------------
#
# Every token minted in this process is recorded: Harness.token, and, by the session fixture
# below, every jwt.encode and RtcTokenCodec.issue (other test modules' helpers, and the tokens
# the server itself issues: access_token, room_token, relay_token) plus every RTC token the
# server verifies (tests that sign one by hand). All log records of the session at INFO and
# above are scanned; the session fails if a line holds a recorded token.

_minted_tokens: set[str] = set()


def record_token(token: str) -> str:
    """Remember a token minted in this session (returned as is) for the end-of-session scan."""
    # Client JWTs and RTC tokens all hold base64 JSON (eyJ...): the scan looks there only.
    assert "eyJ" in token, "the log scan keeps only lines holding 'eyJ'"
    _minted_tokens.add(token)
    return token


class TokenSuspects(logging.Handler):
    """Keeps the log lines (message + exception text) that could hold a token: few or none."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if "eyJ" in line:
            self.lines.append(line)


def leaked_tokens(lines: list[str], tokens: set[str]) -> list[str]:
    return [line for line in lines if any(token in line for token in tokens)]


@pytest.fixture(scope="session", autouse=True)
def no_token_in_any_log_line() -> Iterator[None]:
    root = logging.getLogger()
    suspects = TokenSuspects()
    level = root.level
    patch = pytest.MonkeyPatch()
    encode, rtc_issue, rtc_verify = jwt.encode, RtcTokenCodec.issue, RtcTokenCodec.verify

    def rtc_verify_recording(self: RtcTokenCodec, token: str, now: float) -> Any:
        if token.count(":") == 2 and token.rsplit(":", 1)[1].startswith("eyJ"):
            record_token(token)
        return rtc_verify(self, token, now)

    patch.setattr(jwt, "encode", lambda *a, **kw: record_token(encode(*a, **kw)))
    patch.setattr(RtcTokenCodec, "issue", lambda *a, **kw: record_token(rtc_issue(*a, **kw)))
    patch.setattr(RtcTokenCodec, "verify", rtc_verify_recording)
    root.addHandler(suspects)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(suspects)
        patch.undo()
    leaked = leaked_tokens(suspects.lines, _minted_tokens)
    assert not leaked, f"{len(leaked)} log line(s) hold a token, e.g.:\n{leaked[0]}"
