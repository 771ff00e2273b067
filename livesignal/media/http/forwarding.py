"""Forwarding a gateway request to the node that holds its room's media (PROTOCOL §5).

`forward_if_elsewhere` sends a gateway request on to the room's owner, `forward_push_check`
does the same for nginx-rtmp's `on_publish` of a WeChat push pulled by another node, and
`node_listener_guard` keeps clients off the node listener those forwarded requests arrive on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from livesignal.media.http.forwarder import FORWARDED_HEADER
from livesignal.media.http.gateway import GATEWAY_KEY
from livesignal.media.http.replies import refuse_push, reply
from livesignal.media.http.requests import MAX_BODY_BYTES, bounded_body, granted_client
from livesignal.media.result_codes import ResultCode, shown

log = logging.getLogger(__name__)


@web.middleware
def node_listener_guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Awaitable[web.StreamResponse]:
    """The node listener takes forwarded gateway requests only; clients use the public port.

    Not async itself: `handler` runs as a tail call, so no frame of this middleware stays
    alive under a WebSocket for its whole life."""
    port = request.app[GATEWAY_KEY].node_port
    if port is not None and FORWARDED_HEADER not in request.headers:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname is not None and sockname[1] == port:
            return _not_found()
    return handler(request)


async def _not_found() -> web.StreamResponse:
    return web.Response(status=404, text="not found")


def _room_of(request: web.Request) -> str:
    return (
        request.headers.get("Room-Id")
        or request.headers.get("RoomId")
        or request.query.get("room_id", "")
    )


async def forward_if_elsewhere(request: web.Request) -> web.Response | None:
    """The owner's answer when the room's media lives on another node; None to serve here."""
    room_id = _room_of(request)
    if not room_id or FORWARDED_HEADER in request.headers:
        return None
    # Only a caller the Token admits to the room may make a node claim it (40001 otherwise).
    granted_client(request, room_id)
    gateway = request.app[GATEWAY_KEY]
    try:
        owner = await gateway.placement.owner_of_room(room_id)
    except (RedisError, OSError) as exc:
        log.warning("media placement unavailable (%s): serving %s here", exc, shown(room_id))
        return None
    if owner is None:
        return None
    body = await bounded_body(request, MAX_BODY_BYTES)
    if body is None:
        return reply(ResultCode.BAD_BODY, f"the body is over {MAX_BODY_BYTES // 1024 // 1024} MiB")
    try:
        return await gateway.forwarder.forward(request, owner, body)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # The owner is gone: so are the room's peers. The next request pins the room anew.
        log.warning("media owner %s of %s unreachable: %s", owner, shown(room_id), exc)
        await gateway.placement.lost(room_id, owner)
        return reply(ResultCode.INTERNAL, "the node holding this room's media is gone: retry")


async def forward_push_check(request: web.Request, stream: str, raw: bytes) -> web.Response | None:
    """A WeChat push pulled by another node is decided there (it starts that node's pull)."""
    gateway = request.app[GATEWAY_KEY]
    try:
        owner = await gateway.placement.owner_of_stream(stream)
    except (RedisError, OSError):
        return None
    if owner is None:
        return None
    try:
        answer = await gateway.forwarder.forward(request, owner, raw)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None  # decided here: the signature check needs no media
    return answer if answer.status in (200, 403) else refuse_push()
