"""Mounting the media gateway on an application: its parts, its routes and its shutdown.

`add_media_routes` builds the media server (aiortc), the stream bridge (PyAV threads) and the
WeChat gateway, routes the gateway's paths to their handlers and tears it all down with the
app. The application's wiring imports what it needs of the gateway from here only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from livesignal.media.announce import MediaEvents, ResourceAnnouncer
from livesignal.media.bridge import StreamBridge
from livesignal.media.http import handlers
from livesignal.media.http.forwarder import Forwarder
from livesignal.media.http.forwarding import forward_if_elsewhere, node_listener_guard
from livesignal.media.http.gateway import GATEWAY_KEY, MediaGateway
from livesignal.media.http.on_publish import on_publish
from livesignal.media.http.replies import reply
from livesignal.media.ice import IcePolicy
from livesignal.media.ice import install as install_port_range
from livesignal.media.placement import LocalPlacement, Placement
from livesignal.media.result_codes import GatewayError, ResultCode
from livesignal.media.sfu import MediaServer
from livesignal.media.wechat import WechatGateway
from livesignal.settings import Settings
from livesignal.signal.model.auth import RtcTokenCodec, StreamUrls
from livesignal.signal.model.clock import Clock

__all__ = [
    "GATEWAY_KEY",
    "PlacementFactory",
    "add_media_routes",
    "node_listener_guard",
    "set_node_address",
]

log = logging.getLogger(__name__)

NO_PROCESSOR_MESSAGE = "http server hasn't the processor"
# Path prefixes owned by the gateway: anything unknown under them is "no such processor".
GATEWAY_PREFIXES = ("/rtmp", "/wechat", "/media", "/monitor")
ON_PUBLISH_PATH = "/media/rtmp/on_publish"

Handler = Callable[[web.Request], Awaitable[dict[str, Any]]]

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
        "/monitor/state": ("GET", handlers.monitor_state),
        "/exchange": ("POST", handlers.rtc_exchange),
        "/exit": ("POST", handlers.rtc_exit),
        "/rtmp/exchange": ("POST", handlers.rtmp_exchange),
        "/rtmp/exit": ("POST", handlers.rtmp_exit),
        "/wechat/exchange": ("POST", handlers.wechat_exchange),
        "/wechat/exit": ("POST", handlers.wechat_exit),
        "/media/resources": ("GET", handlers.resources),
    }
    # nginx-rtmp reads only the status line of this one, so it is plain HTTP.
    app.router.add_post(ON_PUBLISH_PATH, on_publish)
    for path, (method, handler) in routes.items():
        app.router.add_route("*", path, _endpoint(method, handler))
    for prefix in GATEWAY_PREFIXES:
        app.router.add_route("*", prefix + "/{tail:.*}", _no_processor)

    async def _shutdown(app: web.Application) -> None:
        await app[GATEWAY_KEY].close()

    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_shutdown)  # idempotent; covers apps cleaned up without shutdown


def set_node_address(app: web.Application, address: str) -> None:
    """Where other nodes reach this one's media (its own listener, not the shared port)."""
    gateway = app[GATEWAY_KEY]
    gateway.placement.listen_at(address)
    gateway.node_port = int(address.rsplit(":", 1)[1])


def _endpoint(method: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def endpoint(request: web.Request) -> web.Response:
        if request.method != method:
            return reply(ResultCode.NO_PROCESSOR, NO_PROCESSOR_MESSAGE)
        try:
            forwarded = await forward_if_elsewhere(request)
            if forwarded is not None:
                return forwarded
            fields = await handler(request)
        except GatewayError as exc:
            return reply(exc.code, exc.message)
        except Exception:
            log.exception("media gateway: %s %s failed", request.method, request.path)
            return reply(ResultCode.INTERNAL, "internal error")
        return reply(ResultCode.SUCCESS, **fields)

    return endpoint


async def _no_processor(request: web.Request) -> web.Response:
    return reply(ResultCode.NO_PROCESSOR, NO_PROCESSOR_MESSAGE)
