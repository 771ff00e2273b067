"""The WeChat mini-program gateway: RTMP in and out of an RTC room.

The mini-program's live-pusher gets a signed push URL on the configured RTMP server; the
gateway pulls that stream (rtmp2rtc) into the room. Each subscribed resource is pushed
(rtc2rtmp) to a stream on the same server for the live-player: audio and video of one
publisher share one stream, so the player gets both from one URL.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from livesignal.media.bridge import BridgeKey, PullSpec, PushSpec, StreamBridge
from livesignal.media.resource import Resource
from livesignal.media.result_codes import bad_body, shown
from livesignal.media.sfu import MediaServer
from livesignal.signal.model.auth import StreamUrls
from livesignal.signal.model.clock import Clock

log = logging.getLogger(__name__)

PROCESSOR = "wechat"


@dataclass(eq=False)
class _Client:
    room_id: str
    user_id: str
    stream: str  # the RTMP stream name the mini-program pushes to
    play_streams: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def key(self) -> BridgeKey:
        return (PROCESSOR, self.room_id, self.user_id)


@dataclass(frozen=True, slots=True)
class WechatExchange:
    publish: list[Resource]
    push_url: str
    play: list[tuple[str, str]]  # (resource uri, rtmp play URL)

    def body(self) -> dict[str, Any]:
        return {
            "publishList": [r.describe() for r in self.publish],
            "rtmpPublishList": [{"rtmpUri": self.push_url}],
            "rtmpPlayList": [{"uri": uri, "rtmpUri": url} for uri, url in self.play],
        }


class WechatGateway:
    def __init__(
        self, media: MediaServer, bridge: StreamBridge, streams: StreamUrls, clock: Clock
    ) -> None:
        self._media = media
        self._bridge = bridge
        self._streams = streams
        self._clock = clock
        self._clients: dict[tuple[str, str], _Client] = {}
        self._by_stream: dict[str, _Client] = {}

    def has_room(self, room_id: str) -> bool:
        return any(client.room_id == room_id for client in self._by_stream.values())

    def client_count(self) -> int:
        return len(self._clients)

    def _signed_push_url(self, stream: str) -> str:
        now = self._clock.now()
        return self._streams.push_url(stream, self._streams.push_expiry(None, now))

    async def exchange(
        self, room_id: str, user_id: str, audio: bool, video: bool, subscribe: list[str]
    ) -> WechatExchange:
        client = self._clients.get((room_id, user_id))
        if client is None:
            # Opaque and unguessable: the stream name is all a player needs to watch it.
            client = _Client(room_id, user_id, stream=f"wx{secrets.token_hex(8)}")
        groups: dict[tuple[str, str], list[str]] = {}
        for uri in dict.fromkeys(subscribe):
            resource = self._media.resource(uri)
            if resource is None or resource.room_id != room_id:
                raise bad_body(f"subscribeList: no resource {shown(uri)} in room {shown(room_id)}")
            groups.setdefault((resource.user_id, resource.msid), []).append(uri)
        pushes: list[PushSpec] = []
        play: list[tuple[str, str]] = []
        for group, uris in groups.items():
            name = client.play_streams.get(group)
            if name is None:
                name = client.play_streams[group] = f"{client.stream}-{len(client.play_streams)}"
            pushes.append(PushSpec(name, partial(self._signed_push_url, name), tuple(uris)))
            play_url = self._streams.rtmp_play_url(name)
            play.extend((uri, play_url) for uri in uris)
        pull = PullSpec(
            self._streams.rtmp_play_url(client.stream), audio=audio, video=video, msid=client.stream
        )
        published = await self._bridge.update(client.key, pull, pushes)
        self._clients[(room_id, user_id)] = client
        self._by_stream[client.stream] = client
        return WechatExchange(published, self._signed_push_url(client.stream), play)

    async def exit(self, room_id: str, user_id: str) -> bool:
        client = self._clients.pop((room_id, user_id), None)
        if client is None:
            return False
        self._by_stream.pop(client.stream, None)
        await self._bridge.exit(client.key)
        return True

    def on_publish(self, app: str, stream: str, args: dict[str, str]) -> bool:
        """nginx-rtmp's on_publish: whether the push is signed; starts the pull if ours."""
        if not self._streams.verify_push(app, stream, args, self._clock.now()):
            # Both come from the pusher: quoted and cut short, so one line stays one line.
            log.info("refused unsigned or expired push to %s", shown(f"/{app}/{stream}"))
            return False
        client = self._by_stream.get(stream)
        if client is not None:
            self._bridge.kick(client.key)  # the pull need not wait out its retry backoff
        return True

    async def close(self) -> None:
        self._clients.clear()
        self._by_stream.clear()
