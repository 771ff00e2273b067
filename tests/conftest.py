"""Shared fixtures: a real livesignal server on a free loopback port, and a REST caller."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from livesignal.app import create_app
from livesignal.appkeys import SERVICES
from livesignal.settings import Settings, settings_from_mapping
from livesignal.signal.clock import Clock, ManualClock, SystemClock
from livesignal.signal.services import Services

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
        token, _ = self.services.ctx.tokens.issue(user_id, self.clock.now(), ttl=ttl, role=role)
        return token

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
        assert isinstance(self.clock, ManualClock), "advance() needs a ManualClock harness"
        self.clock.advance(seconds)


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness() -> AsyncIterator[HarnessFactory]:
    """make_harness(overrides=None, manual_clock=True, run_sweeper=False) -> Harness.

    With a manual clock nothing expires until the test advances the clock and sweeps.
    """
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def make(
        overrides: dict[str, dict[str, Any]] | None = None,
        *,
        manual_clock: bool = True,
        run_sweeper: bool = False,
    ) -> Harness:
        settings = make_settings(overrides)
        clock: Clock = ManualClock() if manual_clock else SystemClock()
        app = create_app(settings, clock=clock, run_sweeper=run_sweeper)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession()
        started.append((server, session))
        return Harness(server=server, session=session, settings=settings, clock=clock)

    yield make
    for server, session in reversed(started):
        await session.close()
        await server.close()


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
