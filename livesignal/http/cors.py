"""CORS for browsers (PROTOCOL §3.6): pages from other origins may call REST and the gateway.

One middleware, first in the chain so that it also marks the answers the other middleware
make (the REST envelope of a 401, 404, 405, 429 or 500) and the gateway's replies. It answers
a preflight itself, before routing has a say: a REST path would otherwise answer OPTIONS
with 405, a gateway path with 41002.

No credentials mode: tokens travel in headers (`Authorization`, `Token`), never in cookies,
so `Access-Control-Allow-Credentials` is never sent and `*` can stand for any origin.

An origin outside `server.cors_origins` gets no CORS header at all: its preflight is refused
with a plain 403, and its actual requests are served as for any client (the server cannot stop
a request it did not see preflighted, and non-browser clients send what they like) but without
`Access-Control-Allow-Origin`, so the browser keeps the answer from the page.

`/ws` is left alone: browsers do not preflight WebSocket upgrades, and the answer to an
upgrade is not read by the page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

# The paths a browser may call cross-origin: REST, the media gateway and the probes.
CORS_PATHS = frozenset({"/exchange", "/exit", "/healthz", "/readyz"})
CORS_PREFIXES = ("/client/", "/server/", "/rtmp/", "/wechat/", "/media/", "/monitor/")

# One fixed set for every path rather than each path's own methods: the gateway routes take
# any method and refuse the wrong one in their own reply format (41002), so the router does not
# know their methods. A method the path lacks is still refused, now with an answer the page
# can read (the REST 405 envelope, the gateway's 41002) instead of an opaque network error.
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
# Echoed from the preflight; these when the browser names none (it then needs none, but a
# curl user sees what the server reads).
DEFAULT_ALLOW_HEADERS = "Authorization, Content-Type, Token, Room-Id, RoomId, X-Reqid"
# Response headers outside the CORS safelist that SDK code reads.
EXPOSE_HEADERS = "X-Reqid, Retry-After"
MAX_AGE = "600"  # seconds a browser may reuse a preflight answer

ANY_ORIGIN = "*"
DEFAULT_PORTS = {"http": 80, "https": 443}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def normalize_origin(origin: str) -> str:
    """`origin` as browsers serialize it: lower case, no default port.

    Expects a valid "scheme://host[:port]" (settings validate `server.cors_origins`).
    """
    parts = urlsplit(origin.lower())
    netloc = parts.netloc
    if parts.port is not None and DEFAULT_PORTS.get(parts.scheme) == parts.port:
        netloc = netloc.rsplit(":", 1)[0]  # "[::1]:443" -> "[::1]" too
    return f"{parts.scheme}://{netloc}"


class CorsPolicy:
    """Which origins may call; the value of `Access-Control-Allow-Origin` for one."""

    def __init__(self, origins: Iterable[str]) -> None:
        listed = list(origins)
        self.any_origin = ANY_ORIGIN in listed
        self.origins = frozenset(normalize_origin(o) for o in listed if o != ANY_ORIGIN)

    def allow_origin(self, origin: str) -> str | None:
        """The Allow-Origin value for `origin`: "*", `origin` itself, or None (may not call)."""
        if self.any_origin:
            return ANY_ORIGIN
        # Browsers serialize an Origin in lower case already; a non-browser may not.
        if origin.lower() in self.origins:
            return origin
        return None


def cors_middleware(origins: Iterable[str]) -> Middleware:
    """The CORS middleware for `server.cors_origins`."""
    policy = CorsPolicy(origins)

    @web.middleware
    def cors(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        # Not async itself: a request it has nothing to do with runs `handler` as a tail call,
        # so no frame of this middleware stays alive under a WebSocket for its whole life.
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser's cross-origin call: the hot path, one lookup
            return handler(request)
        path = request.path
        if path not in CORS_PATHS and not path.startswith(CORS_PREFIXES):
            return handler(request)
        return _cross_origin(request, handler, policy.allow_origin(origin))

    return cors


async def _cross_origin(
    request: web.Request, handler: Handler, allowed: str | None
) -> web.StreamResponse:
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return _preflight(request, allowed)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # what aiohttp itself answers (a 405 on /healthz)
        if allowed is not None:
            _mark(exc.headers, allowed)
        raise
    if allowed is not None and not response.prepared:
        _mark(response.headers, allowed)
    return response


def _preflight(request: web.Request, allowed: str | None) -> web.Response:
    if allowed is None:
        return web.Response(status=403, text="origin not allowed by server.cors_origins")
    headers = {
        "Access-Control-Allow-Origin": allowed,
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        # Any header may come: no credentials ride on this, and the server ignores unknown ones.
        "Access-Control-Allow-Headers": request.headers.get(
            "Access-Control-Request-Headers", DEFAULT_ALLOW_HEADERS
        ),
        "Access-Control-Max-Age": MAX_AGE,
    }
    if allowed != ANY_ORIGIN:
        headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    return web.Response(status=204, headers=headers)


def _mark(headers: CIMultiDict[str], allowed: str) -> None:
    """The CORS headers of an actual response (success or error) to an allowed origin."""
    headers["Access-Control-Allow-Origin"] = allowed
    headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    if allowed != ANY_ORIGIN:
        # The answer differs by origin: a cache must not hand one origin's copy to another.
        vary = headers.get("Vary")
        headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
