"""The gateway endpoints (PROTOCOL §6): what each one does once its request has been read.

Each handler returns the fields of a successful reply or raises `GatewayError`; the endpoint
wrapper in mount.py forwards the request first if the room lives on another node, and turns
both outcomes into the gateway's reply.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from livesignal.media.bridge import PullSpec, PushSpec
from livesignal.media.http.gateway import GATEWAY_KEY
from livesignal.media.http.requests import (
    body_section,
    flag,
    granted_client,
    json_body,
    offer_sdp,
    rtmp_url,
    uri_list,
)
from livesignal.media.result_codes import bad_body


async def monitor_state(request: web.Request) -> dict[str, Any]:
    return {}


async def rtc_exchange(request: web.Request) -> dict[str, Any]:
    room_id, user_id = granted_client(request)
    body = await json_body(request)
    offer = offer_sdp(body)
    subscribe = uri_list(body.get("subscribeList"), "subscribeList")
    gateway = request.app[GATEWAY_KEY]
    result = await gateway.media.exchange(room_id, user_id, offer, subscribe)
    return {
        "sdp": {"type": "answer", "sdp": gateway.ice.announce(result.answer)},
        "publishList": [r.describe() for r in result.published],
        # (ext) which answer m-line (mid) carries each subscription: match it to the client's
        # transceiver.mid (the answer's a=msid names the uri too, but browsers make up their
        # own remote track.id)
        "subscribeList": [
            {"uri": s.uri, "mid": s.mid, "mediaType": s.media_type} for s in result.subscribed
        ],
        "iceServers": gateway.ice.client_servers(),  # (ext)
    }


async def rtc_exit(request: web.Request) -> dict[str, Any]:
    room_id, user_id = granted_client(request)
    await request.app[GATEWAY_KEY].media.exit(room_id, user_id)
    return {}


async def rtmp_exchange(request: web.Request) -> dict[str, Any]:
    room_id, user_id = granted_client(request)
    body = await json_body(request)
    rtmp = body_section(body, "rtmp")
    rtc = body_section(body, "rtc")
    uris = uri_list(rtc.get("subscribeList"), "rtc.subscribeList")
    targets = rtmp.get("rtmpSubscribeList") or []
    if not isinstance(targets, list) or len(targets) != len(uris):
        raise bad_body("rtmp.rtmpSubscribeList must pair one rtmpUri with each rtc.subscribeList")
    grouped: dict[str, list[str]] = {}
    for index, (uri, target) in enumerate(zip(uris, targets, strict=True)):
        url = target.get("rtmpUri") if isinstance(target, dict) else None
        where = f"rtmp.rtmpSubscribeList[{index}].rtmpUri"
        grouped.setdefault(rtmp_url(url, where, pushed=True), []).append(uri)
    pushes = [PushSpec(url, _constant(url), tuple(group)) for url, group in grouped.items()]
    pull: PullSpec | None = None
    source = rtmp.get("uri")
    if source is not None:
        source = rtmp_url(source, "rtmp.uri", pushed=False)
        timestamp = rtmp.get("timestamp")
        if timestamp is not None and (type(timestamp) is not int):
            raise bad_body("rtmp.timestamp must be an integer")
        pull = PullSpec(
            source,
            audio=flag(rtmp, "audio", "rtmp"),
            video=flag(rtmp, "video", "rtmp"),
            msid=f"{user_id}_rtmp",
            timestamp=timestamp,
        )
    gateway = request.app[GATEWAY_KEY]
    published = await gateway.bridge.update(("rtmp", room_id, user_id), pull, pushes)
    return {"publishList": [r.describe() for r in published]}


async def rtmp_exit(request: web.Request) -> dict[str, Any]:
    room_id, user_id = granted_client(request)
    await request.app[GATEWAY_KEY].bridge.exit(("rtmp", room_id, user_id))
    return {}


async def wechat_exchange(request: web.Request) -> dict[str, Any]:
    room_id, user_id = granted_client(request)
    body = await json_body(request)
    rtmp = body_section(body, "rtmp")
    subscribe = uri_list(body.get("subscribeList"), "subscribeList")
    gateway = request.app[GATEWAY_KEY]
    result = await gateway.wechat.exchange(
        room_id,
        user_id,
        audio=flag(rtmp, "audio", "rtmp"),
        video=flag(rtmp, "video", "rtmp"),
        subscribe=subscribe,
    )
    # nginx's on_publish for this stream may reach any node: it must find its way here.
    stream = result.push_url.split("?", 1)[0].rsplit("/", 1)[-1]
    with contextlib.suppress(RedisError, OSError):
        await gateway.placement.note_stream(stream, room_id)
    return {**result.body(), "iceServers": gateway.ice.client_servers()}  # (ext)


async def wechat_exit(request: web.Request) -> dict[str, Any]:
    room_id, user_id = granted_client(request)
    await request.app[GATEWAY_KEY].wechat.exit(room_id, user_id)
    return {}


async def resources(request: web.Request) -> dict[str, Any]:
    room_id = request.query.get("room_id", "")
    if not room_id:
        raise bad_body("room_id query parameter is required")
    granted_client(request, room_id)
    listed = request.app[GATEWAY_KEY].media.resources(room_id)
    return {
        "list": [{"uri": r.uri, "mediaType": r.media_type, "user_id": r.user_id} for r in listed]
    }


def _constant(value: str) -> Callable[[], str]:
    return lambda: value
