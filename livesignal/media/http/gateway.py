"""The media gateway as an application carries it: its parts (`MediaGateway`) and their key.

Every request handler of the gateway reaches the media server, the stream bridge, the WeChat
gateway and the placement through `request.app[GATEWAY_KEY]`; `mount.add_media_routes`
builds them and closes them with the application.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from livesignal.media.announce import ResourceAnnouncer
from livesignal.media.bridge import StreamBridge
from livesignal.media.http.forwarder import Forwarder
from livesignal.media.ice import IcePolicy
from livesignal.media.placement import Placement
from livesignal.media.sfu import MediaServer
from livesignal.media.wechat import WechatGateway
from livesignal.settings import Settings
from livesignal.signal.model.auth import RtcTokenCodec, StreamUrls
from livesignal.signal.model.clock import Clock


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
