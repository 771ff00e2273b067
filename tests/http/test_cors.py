"""PROTOCOL §3.6: a page from another origin can call REST, the gateway and the probes.

Each test does what a browser does: a preflight OPTIONS (Origin, Access-Control-Request-*)
where the request is not "simple", then the actual request with its Origin, and checks what
the browser checks before it hands the answer to the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from multidict import CIMultiDictProxy

from livesignal.http.cors import CorsPolicy
from livesignal.media.http.mount import GATEWAY_KEY
from livesignal.settings import Settings, SettingsError, settings_from_mapping
from livesignal.signal.services.operations import OPERATIONS, Call
from livesignal.signal.services.wiring import Services
from tests.conftest import Harness, HarnessFactory

PAGE = "https://app.example"
OTHER_PAGE = "https://evil.example"
ONLY_PAGE = {"server": {"cors_origins": [PAGE]}}

CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
    "Access-Control-Expose-Headers",
    "Access-Control-Allow-Credentials",
)


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any

    def cors(self) -> dict[str, str]:
        return {name: self.headers[name] for name in CORS_HEADERS if name in self.headers}

    def exposed(self) -> set[str]:
        raw = self.headers.get("Access-Control-Expose-Headers", "")
        return {name.strip().lower() for name in raw.split(",") if name.strip()}

    def varies_by_origin(self) -> bool:
        return "origin" in {v.strip().lower() for v in self.headers.get("Vary", "").split(",")}


async def send(
    h: Harness,
    method: str,
    path: str,
    *,
    origin: str | None = PAGE,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> Answer:
    sent = dict(headers or {})
    if origin is not None:
        sent["Origin"] = origin
    body = None
    if json is not None:
        body = orjson.dumps(json)
        sent["Content-Type"] = "application/json"
    async with h.session.request(method, h.base_url + path, headers=sent, data=body) as response:
        raw = await response.read()
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = raw.decode()
        return Answer(response.status, response.headers, parsed)


async def preflight(
    h: Harness, path: str, method: str, request_headers: str = "", *, origin: str = PAGE
) -> Answer:
    headers = {"Access-Control-Request-Method": method}
    if request_headers:
        headers["Access-Control-Request-Headers"] = request_headers
    return await send(h, "OPTIONS", path, origin=origin, headers=headers)


def allowed_methods(answer: Answer) -> set[str]:
    return {m.strip() for m in answer.headers["Access-Control-Allow-Methods"].split(",")}


def assert_preflight_allows(
    answer: Answer, method: str, allow_origin: str, request_headers: str = ""
) -> None:
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == allow_origin
    assert method in allowed_methods(answer)
    allowed_headers = answer.headers["Access-Control-Allow-Headers"].lower()
    for name in filter(None, (n.strip() for n in request_headers.split(","))):
        assert name.lower() in allowed_headers
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    # Tokens travel in headers: never credentials mode.
    assert "Access-Control-Allow-Credentials" not in answer.headers
    if allow_origin != "*":
        assert answer.varies_by_origin()


def assert_readable(answer: Answer, allow_origin: str) -> None:
    """What a browser needs to hand the answer, and X-Reqid / Retry-After, to the page."""
    assert answer.headers["Access-Control-Allow-Origin"] == allow_origin
    assert {"x-reqid", "retry-after"} <= answer.exposed()
    assert "Access-Control-Allow-Credentials" not in answer.headers
    if allow_origin != "*":
        assert answer.varies_by_origin()


# --- REST -----------------------------------------------------------------------------------


async def test_a_page_creates_a_room_cross_origin(make_harness: HarnessFactory) -> None:
    h = await make_harness(ONLY_PAGE)
    check = await preflight(
        h, "/client/live/room/instance", "POST", "authorization, content-type, x-reqid"
    )
    assert_preflight_allows(check, "POST", PAGE, "authorization, content-type, x-reqid")

    created = await send(
        h,
        "POST",
        "/client/live/room/instance",
        headers={"Authorization": h.token("alice"), "X-Reqid": "req-1"},
        json={"title": "cross-origin live"},
    )
    assert (created.status, created.body["code"]) == (200, 0)
    assert created.headers["X-Reqid"] == "req-1"
    assert_readable(created, PAGE)


async def test_rest_errors_are_readable_by_the_page(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(services: Services, call: Call) -> Any:
        raise RuntimeError("a bug")

    # Routes bind their operation when the app is built: patch before.
    monkeypatch.setitem(OPERATIONS, "user.profile", crash)
    h = await make_harness(ONLY_PAGE)
    unauthorized = await send(h, "POST", "/client/live/room/instance", json={"title": "x"})
    not_found = await send(h, "GET", "/client/no/such/path", headers=auth(h))
    wrong_method = await send(h, "PATCH", "/client/live/room/instance", headers=auth(h))
    crashed = await send(h, "GET", "/client/user/profile", headers=auth(h))
    for answer, status in ((unauthorized, 401), (not_found, 404), (wrong_method, 405)):
        assert (answer.status, answer.body["code"]) == (status, status)
        assert_readable(answer, PAGE)
    assert (crashed.status, crashed.body["code"]) == (500, 500)
    assert_readable(crashed, PAGE)


async def test_a_rate_limited_page_can_read_retry_after(make_harness: HarnessFactory) -> None:
    h = await make_harness({**ONLY_PAGE, "limits": {"requests_per_second": 1}})
    token = h.token("alice")
    answers = [
        await send(h, "GET", "/client/user/profile", headers={"Authorization": token})
        for _ in range(3)
    ]
    limited = answers[-1]
    assert (limited.status, limited.body["code"]) == (429, 429)
    assert "Retry-After" in limited.headers
    assert_readable(limited, PAGE)


async def test_preflight_is_answered_for_every_method_of_a_rest_path(
    harness: Harness,
) -> None:
    for path, method in (
        ("/client/live/room/instance/r1", "DELETE"),
        ("/client/live/room/r1", "PUT"),
        ("/client/live/room/extends", "PUT"),
        ("/client/relay/start", "POST"),
        ("/server/auth/token", "GET"),
    ):
        check = await preflight(harness, path, method, "authorization")
        assert_preflight_allows(check, method, "*", "authorization")


# --- media gateway --------------------------------------------------------------------------


async def test_a_page_calls_the_gateway_cross_origin(make_harness: HarnessFactory) -> None:
    h = await make_harness(ONLY_PAGE)
    requested = "content-type, token, room-id"
    check = await preflight(h, "/exchange", "POST", requested)
    assert_preflight_allows(check, "POST", PAGE, requested)
    for path in ("/exit", "/rtmp/exchange", "/wechat/exchange"):
        assert_preflight_allows(await preflight(h, path, "POST", "token, roomid"), "POST", PAGE)

    refused = await send(
        h, "POST", "/exchange", headers={"Token": "forged", "Room-Id": "r1"}, json={}
    )
    assert (refused.status, refused.body["resultCode"]) == (200, 40001)
    assert_readable(refused, PAGE)

    state = await send(h, "GET", "/monitor/state")
    assert (state.status, state.body) == (200, {"resultCode": 10000})
    assert_readable(state, PAGE)

    token = h.server.app[GATEWAY_KEY].tokens.issue("r1", "alice", h.clock.now())
    assert_preflight_allows(
        await preflight(h, "/media/resources?room_id=r1", "GET", "token"), "GET", PAGE, "token"
    )
    listed = await send(h, "GET", "/media/resources?room_id=r1", headers={"Token": token})
    assert (listed.status, listed.body) == (200, {"resultCode": 10000, "list": []})
    assert_readable(listed, PAGE)

    unknown = await send(h, "POST", "/rtmp/no-such-processor")
    assert unknown.body["resultCode"] == 41002
    assert_readable(unknown, PAGE)


# --- who gets CORS headers ------------------------------------------------------------------


async def test_an_origin_outside_cors_origins_gets_no_cors_headers(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(ONLY_PAGE)
    for path, method in (
        ("/client/live/room/instance", "POST"),
        ("/exchange", "POST"),
        ("/monitor/state", "GET"),
    ):
        check = await preflight(h, path, method, "authorization", origin=OTHER_PAGE)
        assert check.status == 403
        assert check.cors() == {}
    created = await send(
        h,
        "POST",
        "/client/live/room/instance",
        origin=OTHER_PAGE,
        headers=auth(h),
        json={"title": "x"},
    )
    # Served (a non-browser client could send it anyway), but the browser keeps it from the page.
    assert created.status == 200
    assert created.cors() == {}
    assert not created.varies_by_origin()
    state = await send(h, "GET", "/monitor/state", origin=OTHER_PAGE)
    assert state.cors() == {}


async def test_with_the_default_any_origin_gets_a_star(harness: Harness) -> None:
    assert harness.settings.server.cors_origins == ["*"]
    for origin in (PAGE, OTHER_PAGE, "http://localhost:3000", "null"):
        check = await preflight(harness, "/client/live/room/instance", "POST", origin=origin)
        assert_preflight_allows(check, "POST", "*")
        answer = await send(harness, "GET", "/client/user/profile", origin=origin)
        assert answer.status == 401
        assert_readable(answer, "*")
        assert not answer.varies_by_origin()  # the same answer for every origin


async def test_the_same_origin_written_differently_is_allowed(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness({"server": {"cors_origins": ["HTTPS://App.Example:443"]}})
    answer = await send(h, "GET", "/monitor/state", origin=PAGE)
    assert_readable(answer, PAGE)
    assert (await send(h, "GET", "/monitor/state", origin=PAGE + ":8443")).cors() == {}
    assert (await send(h, "GET", "/monitor/state", origin="http://app.example")).cors() == {}


async def test_an_empty_cors_origins_lets_no_page_call(make_harness: HarnessFactory) -> None:
    h = await make_harness({"server": {"cors_origins": []}})
    assert (await preflight(h, "/exchange", "POST", origin=PAGE)).status == 403
    assert (await send(h, "GET", "/monitor/state")).cors() == {}


async def test_without_an_origin_nothing_is_added(harness: Harness) -> None:
    for method, path in (
        ("GET", "/client/user/profile"),
        ("GET", "/monitor/state"),
        ("GET", "/healthz"),
    ):
        answer = await send(harness, method, path, origin=None)
        assert answer.cors() == {}
        assert "Vary" not in answer.headers
    # Not a preflight without an Origin: the REST path answers OPTIONS as before, with 405.
    plain = await send(
        harness,
        "OPTIONS",
        "/client/live/room/instance",
        origin=None,
        headers={"Access-Control-Request-Method": "POST"},
    )
    assert (plain.status, plain.body["code"]) == (405, 405)


async def test_probes_can_be_called_cross_origin(make_harness: HarnessFactory) -> None:
    h = await make_harness(ONLY_PAGE)
    healthy = await send(h, "GET", "/healthz")
    assert (healthy.status, healthy.body) == (200, {"status": "ok"})
    assert_readable(healthy, PAGE)
    assert_readable(await send(h, "GET", "/readyz"), PAGE)
    # An OPTIONS that is no preflight is aiohttp's own 405: readable too.
    assert_readable(await send(h, "OPTIONS", "/healthz"), PAGE)


async def test_the_websocket_endpoint_is_not_affected(harness: Harness) -> None:
    check = await preflight(harness, "/ws", "GET")
    assert check.status != 204
    assert check.cors() == {}
    refused = await send(harness, "GET", "/ws")  # no token: 401 before any upgrade
    assert refused.cors() == {}
    async with harness.session.ws_connect(
        harness.ws_url + "?token=" + harness.token("alice"), headers={"Origin": PAGE}
    ) as socket:
        assert not socket.closed


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origins",
    [
        ["*"],
        [],
        [PAGE, "http://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:8080"],
        ["capacitor://localhost", "HTTPS://App.Example"],
    ],
)
def test_cors_origins_accepts_star_and_origins(origins: list[str]) -> None:
    settings = settings_from_mapping({"server": {"cors_origins": origins}})
    assert settings.server.cors_origins == origins


@pytest.mark.parametrize(
    "bad",
    [
        "https://app.example/",
        "https://app.example/app",
        "https://app.example?x=1",
        "app.example",
        "//app.example",
        "https://",
        "https://*.example.com",
        "https://user@app.example",
        "https://app.example:99999",
        "https://app.example:port",
        "",
        "**",
    ],
)
def test_a_bad_cors_origin_is_refused_by_name(bad: str) -> None:
    with pytest.raises(SettingsError, match=r"server\.cors_origins\[1\]"):
        settings_from_mapping({"server": {"cors_origins": [PAGE, bad]}})
    settings = Settings()
    settings.server.cors_origins = [bad]
    with pytest.raises(SettingsError, match=r"server\.cors_origins\[0\]"):
        settings.validate()


def test_the_policy_compares_origins_as_browsers_send_them() -> None:
    policy = CorsPolicy(["https://App.Example:443", "http://localhost:3000"])
    assert policy.allow_origin("https://app.example") == "https://app.example"
    assert policy.allow_origin("http://localhost:3000") == "http://localhost:3000"
    assert policy.allow_origin("http://localhost:3001") is None
    assert policy.allow_origin("https://app.example.evil") is None
    assert CorsPolicy(["*", PAGE]).allow_origin(OTHER_PAGE) == "*"


def auth(h: Harness) -> dict[str, str]:
    return {"Authorization": h.token("alice")}
