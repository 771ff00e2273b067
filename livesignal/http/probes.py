"""GET /healthz and GET /readyz: probes for process managers and load balancers (PROTOCOL §5).

Plain JSON outside the REST envelope, unauthenticated. They are not operations: no rate limit
sees them and they count as no user's request. /healthz says the process serves; /readyz says
it can serve usefully now, i.e. its store answers (with the redis store, a node whose Redis is
unreachable is alive but not ready: a load balancer sends its clients elsewhere).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from livesignal.http.appkeys import SERVICES

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# A store slower than this to answer a ping is not ready: a probe gets its answer in time
# (orchestrators give up on a probe after about a second) instead of hanging on the store.
READY_TIMEOUT = 1.0


def _answer(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _healthz(request: web.Request) -> web.Response:
    return _answer(200, {"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            ready = await request.app[SERVICES].store_ready()
    except TimeoutError:
        ready = False
    if ready:
        return _answer(200, {"status": "ready"})
    return _answer(503, {"status": "unavailable"})


def add_health_routes(app: web.Application) -> None:
    """GET (and HEAD) /healthz and /readyz; `app` must carry SERVICES."""
    app.router.add_get(HEALTH_PATH, _healthz)
    app.router.add_get(READY_PATH, _readyz)
