"""REST routes of api-docs/live-room.md and relay.md (+ the (ext) ones of PROTOCOL §3.5).

Each route names an operation of the shared table; this module only turns a request into
(caller, params) and the result into the envelope. Literal segments are registered before
`{live_id}` so that they win (PUT /client/live/room/extends is never a start).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from livesignal.http.appkeys import SERVICES
from livesignal.http.envelope import (
    failure,
    plain_failure,
    read_json_object,
    request_id_of,
    success,
)
from livesignal.signal.model.auth import bearer_token
from livesignal.signal.model.errors import ApiError, StoreUnavailable
from livesignal.signal.model.params import Params
from livesignal.signal.services.operations import OPERATIONS, Call

log = logging.getLogger(__name__)

# (method, path, operation, reads a JSON body)
ROUTES: list[tuple[str, str, str, bool]] = [
    ("POST", "/client/live/room/instance", "room.create", True),
    ("DELETE", "/client/live/room/instance/{live_id}", "room.delete", False),
    ("GET", "/client/live/room/info/{live_id}", "room.info", False),
    ("GET", "/client/live/room/heartbeat/{live_id}", "room.heartbeat", False),
    ("GET", "/client/live/room/user_list", "room.user_list", False),
    ("GET", "/client/live/room/list", "room.list", False),
    # PROTOCOL §8: both `/x` and `/x/` match (the SDKs send both).
    ("GET", "/client/live/room/list/anchor", "room.anchor_list", False),
    ("GET", "/client/live/room/list/anchor/", "room.anchor_list", False),
    ("PUT", "/client/live/room/extends", "room.extends", True),
    ("POST", "/client/live/room/user/{live_id}", "room.join", False),
    ("DELETE", "/client/live/room/user/{live_id}", "room.leave", False),
    ("GET", "/client/live/room", "room.search", False),
    ("PUT", "/client/live/room/{live_id}", "room.start", False),
    ("POST", "/client/live/room/{live_id}", "room.stop", False),
    ("DELETE", "/client/live/room/{live_id}", "room.stop", False),
    ("POST", "/client/relay/start", "relay.start", True),
    ("GET", "/client/relay/pending", "relay.pending", False),
    ("GET", "/client/relay/{relay_id}", "relay.info", False),
    ("GET", "/client/relay/{relay_id}/token", "relay.token", False),
    ("POST", "/client/relay/{relay_id}/stop", "relay.stop", False),
    ("POST", "/client/relay/{relay_id}/started", "relay.started", False),
    ("POST", "/client/relay/{relay_id}/extends", "relay.extends", True),
    ("POST", "/client/relay/{relay_id}/accept", "relay.accept", False),
    ("POST", "/client/relay/{relay_id}/reject", "relay.reject", True),
    ("POST", "/client/relay/{relay_id}/cancel", "relay.cancel", False),
    ("GET", "/client/user/profile", "user.profile", False),
    ("PUT", "/client/user/user", "user.update", True),
    ("GET", "/client/user/user/{user_id}", "user.get", False),
    ("GET", "/client/user/users", "user.list", False),
    ("GET", "/client/user/imusers", "user.imusers", False),
    ("GET", "/client/app/config", "app.config", False),
]

REST_PREFIXES = ("/client/", "/server/")
# Over REST these answer `data: [...]`, a JSON array, as the original server and its SDKs do;
# the socket ops keep {list} (PROTOCOL §2, §4.1).
REST_ARRAYS = {"user.list", "user.imusers"}


def rest_handler(operation: str, reads_body: bool) -> Callable[[web.Request], Awaitable[Any]]:
    handler = OPERATIONS[operation]

    async def handle(request: web.Request) -> web.Response:
        request_id = request_id_of(request)
        try:
            services = request.app[SERVICES]
            caller = await services.admission.admit(
                bearer_token(request.headers.get("Authorization"))
            )
            data: dict[str, Any] = {}
            for name in request.query:  # a repeated parameter (user_ids=a&user_ids=b): a list
                values = request.query.getall(name)
                data[name] = values[0] if len(values) == 1 else values
            if reads_body:
                data.update(await read_json_object(request))
            data.update(request.match_info)
            result = await handler(services, Call(caller, Params(data)))
        except ApiError as error:
            return failure(request_id, error)
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.warning("%s failed, store unreachable: %s", operation, exc)
            return failure(request_id, StoreUnavailable())
        if operation in REST_ARRAYS:
            return success(request_id, result["list"])
        return success(request_id, result)

    return handle


@web.middleware
def rest_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Awaitable[web.StreamResponse]:
    """Unknown REST paths, wrong methods and crashes still answer in the envelope.

    Not async itself: other paths (a WebSocket above all) run `handler` as a tail call, so no
    frame of this middleware stays alive for a socket's whole life."""
    if not request.path.startswith(REST_PREFIXES):
        return handler(request)
    return _enveloped(request, handler)


async def _enveloped(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return plain_failure(request_id_of(request), exc.status, exc.reason)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return plain_failure(request_id_of(request), 500, "internal error")


def _method_not_allowed(allowed: list[str]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def refuse(request: web.Request) -> web.Response:
        response = plain_failure(request_id_of(request), 405, "method not allowed")
        response.headers["Allow"] = ", ".join(allowed)
        return response

    return refuse


def add_rest_routes(app: web.Application) -> None:
    by_path: dict[str, list[tuple[str, str, bool]]] = {}
    for method, path, operation, reads_body in ROUTES:
        by_path.setdefault(path, []).append((method, operation, reads_body))
    for path, routes in by_path.items():
        for method, operation, reads_body in routes:
            app.router.add_route(method, path, rest_handler(operation, reads_body))
        # Any other method on this path is 405 here: a literal path never falls through to a
        # later `{live_id}` route (PUT /client/live/room/instance is not a start).
        app.router.add_route("*", path, _method_not_allowed([m for m, _, _ in routes]))
