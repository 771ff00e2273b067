"""The stream server: per client, one rtmp2rtc pull and any number of rtc2rtmp pushes.

Used by `/rtmp/exchange` (the caller names the URLs) and by the WeChat gateway (which
generates them). A pull publishes its tracks into the room through the MediaServer; a push
subscribes to resources through it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from livesignal.media.feed import FeedTrack
from livesignal.media.keyed_lock import KeyedLock
from livesignal.media.resource import Resource
from livesignal.media.result_codes import bad_body, shown, shutting_down
from livesignal.media.rtmp.pull import RtmpPuller
from livesignal.media.rtmp.push import RtmpPusher
from livesignal.media.rtmp.worker import redact_url
from livesignal.media.sfu import MediaServer
from livesignal.media.tracks import SubscriberTrack

log = logging.getLogger(__name__)

# (processor, room id, user id): /rtmp and /wechat clients of one user are distinct.
BridgeKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class PullSpec:
    url: str
    audio: bool
    video: bool
    msid: str
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class PushSpec:
    """Push the resources `uris` (at most one audio, one video) to one RTMP stream."""

    name: str  # identifies the target across exchanges
    url: Callable[[], str]  # called on every (re)connect, so a signature can be renewed
    uris: tuple[str, ...]


@dataclass(eq=False)
class _Pull:
    spec: PullSpec
    puller: RtmpPuller
    resources: list[Resource]


@dataclass(eq=False)
class _Push:
    spec: PushSpec
    pusher: RtmpPusher


@dataclass(eq=False)
class _Client:
    pull: _Pull | None = None
    pushes: dict[str, _Push] = field(default_factory=dict)


class StreamBridge:
    def __init__(self, media: MediaServer, *, pull_timeout: float = 3.0) -> None:
        self._media = media
        self._pull_timeout = pull_timeout
        self._clients: dict[BridgeKey, _Client] = {}
        self._locks: KeyedLock[BridgeKey] = KeyedLock()
        self._closing = False

    def client_count(self) -> int:
        return len(self._clients)

    def has_room(self, room_id: str) -> bool:
        return any(key[1] == room_id for key in self._clients)

    async def update(
        self, key: BridgeKey, pull: PullSpec | None, pushes: list[PushSpec]
    ) -> list[Resource]:
        """Bring the client's pull and pushes to the given state; the pull's resources."""
        self._refuse_if_closing(key)
        # A resource whose source stopped is open to the pushes that already take it only.
        current = self._clients.get(key)
        held = {uri for p in current.pushes.values() for uri in p.spec.uris} if current else set()
        self._validate_pushes(pushes, held)
        async with self._locks.hold(key):
            self._refuse_if_closing(key)
            client = self._clients.setdefault(key, _Client())
            await self._update_pull(key, client, pull)
            await self._update_pushes(key, client, pushes, held)
            return list(client.pull.resources) if client.pull else []

    def _refuse_if_closing(self, key: BridgeKey) -> None:
        """Checked before anything is started: close() would not see it, and it would run on."""
        if self._closing:
            log.warning("%s exchange in room %s from %s refused: shutting down", *key)
            raise shutting_down()

    def _validate_pushes(self, pushes: list[PushSpec], held: Collection[str]) -> None:
        for spec in pushes:
            kinds: list[str] = []
            for uri in spec.uris:
                resource = self._media.available(uri, held=held)
                if resource is None:
                    raise bad_body(f"subscribeList: no resource {shown(uri)}")
                if resource.kind in kinds:
                    raise bad_body(f"two {resource.kind} resources pushed to one RTMP stream")
                kinds.append(resource.kind)

    async def _update_pull(self, key: BridgeKey, client: _Client, spec: PullSpec | None) -> None:
        current = client.pull
        if current is not None and spec is not None:
            old = current.spec
            same_source = (old.url, old.audio, old.video) == (spec.url, spec.audio, spec.video)
            if spec.timestamp is not None and old.timestamp is not None:
                if spec.timestamp < old.timestamp:
                    return  # an older request arriving late: ignored (api-docs)
                if spec.timestamp > old.timestamp:
                    same_source = False  # "uri or media changed": pull and publish anew
            if same_source:
                return
        if current is not None:
            client.pull = None
            await self._stop_pull(current)
        if spec is None or not (spec.audio or spec.video):
            return
        self._refuse_if_closing(key)
        _, room_id, user_id = key
        loop = asyncio.get_running_loop()
        video = FeedTrack("video", codec="h264") if spec.video else None
        audio = FeedTrack("audio") if spec.audio else None

        def on_source(live: bool) -> None:
            # While the source is down its resources are announced as gone and not listed;
            # they stay registered so that subscribers resume when it comes back, same uris.
            current = client.pull
            if current is None or current.puller is not puller:
                return  # a pull replaced or stopped since: its resources are withdrawn
            for resource in current.resources:
                if live:
                    self._media.source_resumed(resource.uri)
                else:
                    self._media.source_stopped(resource.uri)

        puller = RtmpPuller(
            spec.url,
            loop,
            video=video,
            audio=audio,
            open_timeout=self._pull_timeout,
            read_timeout=self._pull_timeout,
            on_source=on_source,
        )
        resources = [
            self._media.publish(room_id, user_id, track.kind, spec.msid, track)
            for track in (audio, video)
            if track is not None
        ]
        puller.start()
        client.pull = _Pull(spec, puller, resources)
        log.info("rtmp2rtc %s -> room %s as %s", redact_url(spec.url), room_id, user_id)

    async def _stop_pull(self, pull: _Pull) -> None:
        for resource in pull.resources:
            self._media.withdraw(resource.uri)
        await pull.puller.stop()

    async def _update_pushes(
        self, key: BridgeKey, client: _Client, specs: list[PushSpec], held: Collection[str]
    ) -> None:
        wanted = {spec.name: spec for spec in specs}
        for name, push in list(client.pushes.items()):
            spec = wanted.get(name)
            if spec is None or spec.uris != push.spec.uris or push.pusher.stopping:
                del client.pushes[name]
                await push.pusher.stop()
        # Checked again after the awaits: replacing the pull withdrew its resources, which the
        # client may have listed to push, and other clients may have left meanwhile.
        self._validate_pushes(specs, held)
        self._refuse_if_closing(key)
        loop = asyncio.get_running_loop()
        for name, spec in wanted.items():
            if name in client.pushes:
                continue
            # H.264 is remuxed as it is; anything else is decoded and encoded.
            tracks: list[SubscriberTrack] = [
                self._media.subscribe(uri, codec=RtmpPusher.REMUXED_CODEC) for uri in spec.uris
            ]
            pusher = RtmpPusher(spec.url, loop, list(tracks))
            pusher.start()
            client.pushes[name] = _Push(spec, pusher)
            log.info("rtc2rtmp %s -> %s", ",".join(spec.uris), redact_url(spec.url()))

    def kick(self, key: BridgeKey) -> bool:
        """Retry the client's pull now (its publisher just started); False if none."""
        client = self._clients.get(key)
        if client is None or client.pull is None:
            return False
        client.pull.puller.kick()
        return True

    async def exit(self, key: BridgeKey) -> bool:
        async with self._locks.hold(key):
            client = self._clients.pop(key, None)
        if client is None:
            return False
        await self._stop_client(client)
        return True

    async def _stop_client(self, client: _Client) -> None:
        stops = [push.pusher.stop() for push in client.pushes.values()]
        client.pushes.clear()
        if client.pull is not None:
            pull, client.pull = client.pull, None
            for resource in pull.resources:
                self._media.withdraw(resource.uri)
            stops.append(pull.puller.stop())
        await asyncio.gather(*stops)

    async def close(self) -> None:
        self._closing = True
        clients = list(self._clients.values())
        self._clients.clear()
        await asyncio.gather(*(self._stop_client(c) for c in clients))
