"""Media gateway routes (PROTOCOL §6): HTTP 200 with `resultCode`, `message` on failure.

`add_media_routes` is the only entry point; it wires the media server (aiortc), the stream
bridge (PyAV threads) and the WeChat gateway into the app and tears them down with it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiohttp import web
from redis.exceptions import RedisError

from livesignal.media.announce import MediaEvents, ResourceAnnouncer
from livesignal.media.bridge import PullSpec, PushSpec, StreamBridge
from livesignal.media.http.forwarding import FORWARDED_HEADER, Forwarder
from livesignal.media.ice import IcePolicy
from livesignal.media.ice import install as install_port_range
from livesignal.media.placement import LocalPlacement, Placement
from livesignal.media.result_codes import GatewayError, ResultCode, bad_body, bad_token, shown
from livesignal.media.rtmp.publish import parse_rtmp_url
from livesignal.media.sfu import MediaServer
from livesignal.media.wechat import WechatGateway
from livesignal.settings import Settings
from livesignal.signal.model.auth import RtcTokenCodec, StreamUrls
from livesignal.signal.model.clock import Clock

logger = logging.getLogger(__name__)

NO_PROCESSOR_MESSAGE = "http server hasn't the processor"
# Path prefixes owned by the gateway: anything unknown under them is "no such processor".
GATEWAY_PREFIXES = ("/rtmp", "/wechat", "/media", "/monitor")
ON_PUBLISH_PATH = "/media/rtmp/on_publish"
MAX_BODY_BYTES = 1024 * 1024  # PROTOCOL §6: a larger body is 40002
# nginx-rtmp's on_publish form is a few hundred bytes: the call, the client and the push URL.
MAX_PUBLISH_FORM_BYTES = 16 * 1024
MAX_PUBLISH_FORM_FIELDS = 100
# The fields the push decision reads: one of each, or the form is refused (no guessing which).
PUBLISH_DECISION_FIELDS = ("app", "name", "key", "expire", "e", "token")
MAX_RTMP_URL_LENGTH = 2048

Handler = Callable[[web.Request], Awaitable[dict[str, Any]]]


@dataclass(eq=False)
class MediaGateway:
    settings: Settings
    clock: Clock
    tokens: RtcTokenCodec
    streams: StreamUrls
    media: MediaServer
    bridge: StreamBridge
    wechat: WechatGateway
    placement: Placement
    forwarder: Forwarder
    ice: IcePolicy
    announcer: ResourceAnnouncer
    node_port: int | None = None  # this process's own listener (forwarded requests only)

    async def close(self) -> None:
        await self.wechat.close()
        await self.bridge.close()
        await self.media.close()
        await self.announcer.close()  # the withdrawals of shutdown go out too
        await self.placement.close()
        await self.forwarder.close()


GATEWAY_KEY = web.AppKey("livesignal_media_gateway", MediaGateway)


PlacementFactory = Callable[[Callable[[str], bool]], Placement]


def add_media_routes(
    app: web.Application,
    settings: Settings,
    clock: Clock,
    placement: PlacementFactory = lambda _has_media: LocalPlacement(),
    events: MediaEvents | None = None,
) -> None:
    """`placement` makes, from "does this node have media for room X", where rooms live;
    `events` sends media.published / media.unpublished to the live room of the same id."""
    ice = IcePolicy.from_settings(settings.media)
    if ice.udp_ports is not None:
        install_port_range()
    announcer = ResourceAnnouncer(events)
    media = MediaServer(ice.rtc_servers(), udp_ports=ice.udp_ports, listener=announcer)
    bridge = StreamBridge(media)
    streams = StreamUrls(settings.stream, settings.rtc)
    wechat = WechatGateway(media, bridge, streams, clock)

    def has_media(room_id: str) -> bool:
        return media.has_room(room_id) or bridge.has_room(room_id) or wechat.has_room(room_id)

    gateway = MediaGateway(
        settings=settings,
        clock=clock,
        tokens=RtcTokenCodec(settings.rtc),
        streams=streams,
        media=media,
        bridge=bridge,
        wechat=wechat,
        placement=placement(has_media),
        forwarder=Forwarder(),
        ice=ice,
        announcer=announcer,
    )
    app[GATEWAY_KEY] = gateway
    routes: dict[str, tuple[str, Handler]] = {
        "/monitor/state": ("GET", _monitor_state),
        "/exchange": ("POST", _exchange),
        "/exit": ("POST", _exit),
        "/rtmp/exchange": ("POST", _rtmp_exchange),
        "/rtmp/exit": ("POST", _rtmp_exit),
        "/wechat/exchange": ("POST", _wechat_exchange),
        "/wechat/exit": ("POST", _wechat_exit),
        "/media/resources": ("GET", _resources),
    }
    # nginx-rtmp reads only the status line of this one, so it is plain HTTP.
    app.router.add_post(ON_PUBLISH_PATH, _on_publish)
    for path, (method, handler) in routes.items():
        app.router.add_route("*", path, _endpoint(method, handler))
    for prefix in GATEWAY_PREFIXES:
        app.router.add_route("*", prefix + "/{tail:.*}", _no_processor)

    async def _shutdown(app: web.Application) -> None:
        await app[GATEWAY_KEY].close()

    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_shutdown)  # idempotent; covers apps cleaned up without shutdown


def _reply(code: ResultCode, message: str | None = None, **fields: Any) -> web.Response:
    body: dict[str, Any] = {"resultCode": int(code)}
    if message is not None:
        body["message"] = message
    body.update(fields)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def set_node_address(app: web.Application, address: str) -> None:
    """Where other nodes reach this one's media (its own listener, not the shared port)."""
    gateway = app[GATEWAY_KEY]
    gateway.placement.listen_at(address)
    gateway.node_port = int(address.rsplit(":", 1)[1])


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


async def _forward_if_elsewhere(request: web.Request) -> web.Response | None:
    """The owner's answer when the room's media lives on another node; None to serve here."""
    room_id = _room_of(request)
    if not room_id or FORWARDED_HEADER in request.headers:
        return None
    # Only a caller the Token admits to the room may make a node claim it (40001 otherwise).
    _client(request, room_id)
    gateway = request.app[GATEWAY_KEY]
    try:
        owner = await gateway.placement.owner_of_room(room_id)
    except (RedisError, OSError) as exc:
        logger.warning("media placement unavailable (%s): serving %s here", exc, shown(room_id))
        return None
    if owner is None:
        return None
    body = await _bounded_body(request, MAX_BODY_BYTES)
    if body is None:
        return _reply(ResultCode.BAD_BODY, f"the body is over {MAX_BODY_BYTES // 1024 // 1024} MiB")
    try:
        return await gateway.forwarder.forward(request, owner, body)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # The owner is gone: so are the room's peers. The next request pins the room anew.
        logger.warning("media owner %s of %s unreachable: %s", owner, shown(room_id), exc)
        await gateway.placement.lost(room_id, owner)
        return _reply(ResultCode.INTERNAL, "the node holding this room's media is gone: retry")


def _endpoint(method: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def endpoint(request: web.Request) -> web.Response:
        if request.method != method:
            return _reply(ResultCode.NO_PROCESSOR, NO_PROCESSOR_MESSAGE)
        try:
            forwarded = await _forward_if_elsewhere(request)
            if forwarded is not None:
                return forwarded
            fields = await handler(request)
        except GatewayError as exc:
            return _reply(exc.code, exc.message)
        except Exception:
            logger.exception("media gateway: %s %s failed", request.method, request.path)
            return _reply(ResultCode.INTERNAL, "internal error")
        return _reply(ResultCode.SUCCESS, **fields)

    return endpoint


async def _no_processor(request: web.Request) -> web.Response:
    return _reply(ResultCode.NO_PROCESSOR, NO_PROCESSOR_MESSAGE)


# --- request parsing ------------------------------------------------------------------------


def _client(request: web.Request, room_id: str | None = None) -> tuple[str, str]:
    """(room id, user id) of a request whose Token grants that room; else 40001."""
    gateway = request.app[GATEWAY_KEY]
    token = request.headers.get("Token", "").strip()
    if not token:
        raise bad_token("Token header is missing")
    room = room_id or request.headers.get("Room-Id") or request.headers.get("RoomId")
    if not room:
        raise bad_token("Room-Id header is missing")
    try:
        grant = gateway.tokens.verify(token, gateway.clock.now())
    except ValueError as exc:
        raise bad_token(f"invalid Token: {exc}") from exc
    if grant.room_name != room or not grant.user_id:
        raise bad_token("Token does not grant this room")
    return room, grant.user_id


async def _bounded_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None if it is over `limit` bytes.

    Read here rather than with `request.read()`, whose own cap (the app's client_max_size)
    raises an HTTP 413 that would escape the gateway's reply format.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await _bounded_body(request, MAX_BODY_BYTES)
    if raw is None:
        raise bad_body(f"the body is over {MAX_BODY_BYTES // 1024 // 1024} MiB")
    if not raw.strip():
        raise bad_body("a JSON object body is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_body(f"malformed JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_body("the body must be a JSON object")
    return body


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_body(f"{name} must be an object")
    return value


def _flag(section: dict[str, Any], name: str, where: str) -> bool:
    value = section.get(name, True)
    if not isinstance(value, bool):
        raise bad_body(f"{where}.{name} must be true or false")
    return value


def _uris(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_body(f"{where} must be an array")
    uris: list[str] = []
    for index, item in enumerate(value):
        uri = item.get("uri") if isinstance(item, dict) else None
        if not isinstance(uri, str) or not uri:
            raise bad_body(f"{where}[{index}].uri must be a non-empty string")
        uris.append(uri)
    return uris


def _rtmp_url(value: Any, where: str, *, pushed: bool) -> str:
    """A client-given RTMP URL, checked here so that a worker thread never retries a bad one."""
    if not isinstance(value, str) or not value.startswith(("rtmp://", "rtmps://")):
        raise bad_body(f"{where} must be an rtmp:// URL")
    if len(value) > MAX_RTMP_URL_LENGTH or not value.isprintable() or " " in value:
        raise bad_body(f"{where} must be at most {MAX_RTMP_URL_LENGTH} printable characters")
    if pushed:
        # The pusher speaks plain RTMP itself (rtmp_publish): it must be able to parse this.
        try:
            parse_rtmp_url(value)
        except ValueError as exc:
            raise bad_body(f"{where}: {shown(str(exc))}") from exc
    return value


def _offer(body: dict[str, Any]) -> str:
    description = body.get("sdp")
    if not isinstance(description, dict):
        raise bad_body("sdp must be an object {type, sdp}")
    if description.get("type") != "offer":
        raise bad_body('sdp.type must be "offer"')
    text = description.get("sdp")
    if not isinstance(text, str) or not text.strip():
        raise bad_body("sdp.sdp must be a non-empty string")
    return text


# --- handlers -------------------------------------------------------------------------------


async def _monitor_state(request: web.Request) -> dict[str, Any]:
    return {}


async def _exchange(request: web.Request) -> dict[str, Any]:
    room_id, user_id = _client(request)
    body = await _json_object(request)
    offer = _offer(body)
    subscribe = _uris(body.get("subscribeList"), "subscribeList")
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


async def _exit(request: web.Request) -> dict[str, Any]:
    room_id, user_id = _client(request)
    await request.app[GATEWAY_KEY].media.exit(room_id, user_id)
    return {}


async def _rtmp_exchange(request: web.Request) -> dict[str, Any]:
    room_id, user_id = _client(request)
    body = await _json_object(request)
    rtmp = _object(body, "rtmp")
    rtc = _object(body, "rtc")
    uris = _uris(rtc.get("subscribeList"), "rtc.subscribeList")
    targets = rtmp.get("rtmpSubscribeList") or []
    if not isinstance(targets, list) or len(targets) != len(uris):
        raise bad_body("rtmp.rtmpSubscribeList must pair one rtmpUri with each rtc.subscribeList")
    grouped: dict[str, list[str]] = {}
    for index, (uri, target) in enumerate(zip(uris, targets, strict=True)):
        url = target.get("rtmpUri") if isinstance(target, dict) else None
        where = f"rtmp.rtmpSubscribeList[{index}].rtmpUri"
        grouped.setdefault(_rtmp_url(url, where, pushed=True), []).append(uri)
    pushes = [PushSpec(url, _constant(url), tuple(group)) for url, group in grouped.items()]
    pull: PullSpec | None = None
    source = rtmp.get("uri")
    if source is not None:
        source = _rtmp_url(source, "rtmp.uri", pushed=False)
        timestamp = rtmp.get("timestamp")
        if timestamp is not None and (type(timestamp) is not int):
            raise bad_body("rtmp.timestamp must be an integer")
        pull = PullSpec(
            source,
            audio=_flag(rtmp, "audio", "rtmp"),
            video=_flag(rtmp, "video", "rtmp"),
            msid=f"{user_id}_rtmp",
            timestamp=timestamp,
        )
    gateway = request.app[GATEWAY_KEY]
    published = await gateway.bridge.update(("rtmp", room_id, user_id), pull, pushes)
    return {"publishList": [r.describe() for r in published]}


async def _rtmp_exit(request: web.Request) -> dict[str, Any]:
    room_id, user_id = _client(request)
    await request.app[GATEWAY_KEY].bridge.exit(("rtmp", room_id, user_id))
    return {}


async def _wechat_exchange(request: web.Request) -> dict[str, Any]:
    room_id, user_id = _client(request)
    body = await _json_object(request)
    rtmp = _object(body, "rtmp")
    subscribe = _uris(body.get("subscribeList"), "subscribeList")
    gateway = request.app[GATEWAY_KEY]
    result = await gateway.wechat.exchange(
        room_id,
        user_id,
        audio=_flag(rtmp, "audio", "rtmp"),
        video=_flag(rtmp, "video", "rtmp"),
        subscribe=subscribe,
    )
    # nginx's on_publish for this stream may reach any node: it must find its way here.
    stream = result.push_url.split("?", 1)[0].rsplit("/", 1)[-1]
    with contextlib.suppress(RedisError, OSError):
        await gateway.placement.note_stream(stream, room_id)
    return {**result.body(), "iceServers": gateway.ice.client_servers()}  # (ext)


async def _wechat_exit(request: web.Request) -> dict[str, Any]:
    room_id, user_id = _client(request)
    await request.app[GATEWAY_KEY].wechat.exit(room_id, user_id)
    return {}


async def _resources(request: web.Request) -> dict[str, Any]:
    room_id = request.query.get("room_id", "")
    if not room_id:
        raise bad_body("room_id query parameter is required")
    _client(request, room_id)
    resources = request.app[GATEWAY_KEY].media.resources(room_id)
    return {
        "list": [{"uri": r.uri, "mediaType": r.media_type, "user_id": r.user_id} for r in resources]
    }


async def _on_publish(request: web.Request) -> web.Response:
    """nginx-rtmp on_publish: 2xx lets the push in, anything else refuses it.

    Whatever form a client makes nginx send, the answer is 200 or 403, never a 5xx.
    """
    raw = await _bounded_body(request, MAX_PUBLISH_FORM_BYTES)
    fields = _publish_form(raw)
    if fields is not None and raw is not None and FORWARDED_HEADER not in request.headers:
        forwarded = await _forward_push_check(request, fields.get("name", ""), raw)
        if forwarded is not None:
            return forwarded
    if fields is None:
        logger.info("refused a push: unreadable on_publish form")
        return _refuse_push()
    app_name = fields.pop("app", "")
    stream = fields.pop("name", "")
    try:
        allowed = request.app[GATEWAY_KEY].wechat.on_publish(app_name, stream, fields)
    except Exception:
        # A bug, not the client's doing: logged as one, and the push stays out.
        logger.exception("on_publish failed for %s", shown(f"/{app_name}/{stream}"))
        return _refuse_push()
    if allowed:
        return web.Response(text="ok")
    return _refuse_push()


async def _forward_push_check(request: web.Request, stream: str, raw: bytes) -> web.Response | None:
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
    return answer if answer.status in (200, 403) else _refuse_push()


def _refuse_push() -> web.Response:
    return web.Response(status=403, text="push refused")


def _publish_form(raw: bytes | None) -> dict[str, str] | None:
    """The urlencoded form's fields; None if too large, not UTF-8, or ambiguous.

    A decision field sent twice is refused rather than guessed: nginx-rtmp appends the
    pusher's own query string to the form, so a pusher could otherwise pick which copy counts.
    """
    if raw is None:
        return None
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PUBLISH_FORM_FIELDS,
        )
    except ValueError:  # UnicodeDecodeError included
        return None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields and name in PUBLISH_DECISION_FIELDS:
            return None
        fields[name] = value
    return fields


def _constant(value: str) -> Callable[[], str]:
    return lambda: value
