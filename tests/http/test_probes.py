"""livesignal/http/probes.py, PROTOCOL §5: GET /healthz and GET /readyz, unauthenticated and
outside the REST envelope."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from livesignal.http import probes as health
from livesignal.signal.backends.base import Store
from tests.conftest import Harness, HarnessFactory


async def probe(h: Harness, path: str, method: str = "GET") -> tuple[int, bytes, str]:
    async with h.session.request(method, h.base_url + path) as response:
        return response.status, await response.read(), response.content_type


async def test_healthz_is_200_ok_without_a_token(harness: Harness) -> None:
    status, body, content_type = await probe(harness, "/healthz")
    assert (status, orjson.loads(body), content_type) == (200, {"status": "ok"}, "application/json")
    status, body, _ = await probe(harness, "/healthz", "HEAD")
    assert (status, body) == (200, b"")


async def test_readyz_is_200_while_the_store_answers(harness: Harness) -> None:
    status, body, _ = await probe(harness, "/readyz")
    assert (status, orjson.loads(body)) == (200, {"status": "ready"})


async def test_readyz_is_503_while_the_store_does_not_answer_and_200_again_after(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(self: Store) -> None:
        raise ConnectionError("store unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(store_class(harness), "ping", unreachable)
        status, body, _ = await probe(harness, "/readyz")
        assert (status, orjson.loads(body)) == (503, {"status": "unavailable"})
        # Alive all the same: a process manager must not restart it for its store.
        assert (await probe(harness, "/healthz"))[0] == 200
    status, body, _ = await probe(harness, "/readyz")
    assert (status, orjson.loads(body)) == (200, {"status": "ready"})


async def test_readyz_is_503_in_time_when_the_store_hangs(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs(self: Store) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(store_class(harness), "ping", hangs)
    monkeypatch.setattr(health, "READY_TIMEOUT", 0.05)
    status, body, _ = await asyncio.wait_for(probe(harness, "/readyz"), 2.0)
    assert (status, orjson.loads(body)) == (503, {"status": "unavailable"})


async def test_probes_are_not_rate_limited_or_counted_as_requests(
    make_harness: HarnessFactory,
) -> None:
    # One request per second with a burst of 2: a third REST call in a row would be 429.
    h = await make_harness({"limits": {"requests_per_second": 1}}, manual_clock=False)
    for _ in range(20):
        assert (await probe(h, "/healthz"))[0] == 200
        assert (await probe(h, "/readyz"))[0] == 200
    assert (await h.call("GET", "/client/user/profile", "alice")).status == 200


async def test_other_methods_are_not_enveloped(harness: Harness) -> None:
    status, body, _ = await probe(harness, "/healthz", "POST")
    assert status == 405
    assert b"request_id" not in body


def store_class(harness: Harness) -> type[Store]:
    """The class of the harness's store (memory or Redis), whose ping a test replaces."""
    return type(harness.services._ctx.store)
