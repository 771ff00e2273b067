"""The media server: aiortc peers, published resources and subscriptions through MediaRelay.

A client is one (room id, user id). Its /exchange offer publishes every m-line the client
sends on (each becomes a resource with an opaque uri) and receives one subscribed resource on
each m-line it receives on. A later offer from the same RTCPeerConnection (same ICE ufrag)
renegotiates; an offer with new ICE credentials replaces the old connection.

What a resource is lives in resource.py, a client's peer state in peer.py, and what an offer
may be and how its answer is laid out in offer.py; this module keeps the registry of
resources and peers and applies each exchange to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from livesignal.media.aiortc_taps import (
    FORWARDED_CODECS,
    forward_keyframe_requests,
    negotiated_codec,
    tap_encoded_frames,
)
from livesignal.media.census import CENSUS
from livesignal.media.feed import FeedTrack
from livesignal.media.ice import ports_for_new_peers
from livesignal.media.keyed_lock import KeyedLock
from livesignal.media.offer import (
    checked_offer,
    plan_subscriptions,
    prefer_codecs,
    refused,
    refused_by_aiortc,
    set_direction,
)
from livesignal.media.peer import ClientKey, Peer
from livesignal.media.resource import MEDIA_TYPES, Resource, ResourceListener
from livesignal.media.result_codes import bad_body, shown, shutting_down
from livesignal.media.sdp import check as sdp_check
from livesignal.media.sdp import parse as sdp
from livesignal.media.tracks import SubscriberTrack

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Subscribed:
    uri: str
    mid: str
    media_type: int


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    answer: str
    published: list[Resource]
    subscribed: list[Subscribed]


class MediaServer:
    def __init__(
        self,
        ice_servers: list[RTCIceServer] | None = None,
        *,
        udp_ports: range | None = None,
        listener: ResourceListener | None = None,
    ) -> None:
        # An explicit empty list keeps aiortc from contacting its default public STUN server.
        self._ice_servers = list(ice_servers or [])
        self._udp_ports = udp_ports  # ICE host ports of new peers (livesignal.media.ice)
        self._listener = listener
        self._relay = MediaRelay()
        self._resources: dict[str, Resource] = {}
        self._peers: dict[ClientKey, Peer] = {}
        self._locks: KeyedLock[ClientKey] = KeyedLock()
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False

    # --- resources -----------------------------------------------------------------------

    def publish(
        self, room_id: str, user_id: str, kind: str, msid: str, source: FeedTrack
    ) -> Resource:
        """Register `source` as a resource of the room; it is relayed from now on."""
        uri = f"{kind}-{secrets.token_urlsafe(12)}"
        resource = Resource(uri, room_id, user_id, kind, msid, source)
        # A permanent consumer keeps MediaRelay reading the source even with no subscriber,
        # so the source never queues up and its GOP cache stays current.
        drain_proxy = self._relay.subscribe(source, buffered=False)
        resource.drain = self._spawn(_drain(drain_proxy), f"livesignal-media-drain-{uri}")
        self._resources[uri] = resource
        log.info("room %s: %s published %s %s", room_id, user_id, kind, uri)
        if self._listener is not None:
            self._listener.published(resource)
        return resource

    def withdraw(self, uri: str) -> None:
        resource = self._resources.pop(uri, None)
        if resource is None:
            return
        resource.source.stop()  # ends MediaRelay's reader, every proxy and the drain
        log.info("room %s: %s withdrew %s", resource.room_id, resource.user_id, uri)
        if self._listener is not None:
            self._listener.withdrawn(resource)

    def source_stopped(self, uri: str) -> None:
        """The source of `uri` stopped for now: the resource is announced as gone, and is
        no longer listed or open to new subscribers. It stays registered: subscriptions made
        before go on, and resume when `source_resumed` is called."""
        resource = self._resources.get(uri)
        if resource is None or resource.source_stopped:
            return
        resource.source_stopped = True
        log.info("room %s: the source of %s stopped", resource.room_id, uri)
        if self._listener is not None:
            self._listener.withdrawn(resource)

    def source_resumed(self, uri: str) -> None:
        """The source of `uri` is back: listed and announced again, with the same uri."""
        resource = self._resources.get(uri)
        if resource is None or not resource.source_stopped:
            return
        resource.source_stopped = False
        log.info("room %s: the source of %s is back", resource.room_id, uri)
        if self._listener is not None:
            self._listener.published(resource)

    def resource(self, uri: str) -> Resource | None:
        """The registered resource `uri`, its source stopped or not."""
        return self._resources.get(uri)

    def available(self, uri: str, *, held: Collection[str] = ()) -> Resource | None:
        """The resource `uri` if a subscription may take it: one that is listed, or one the
        subscriber already takes (`held`), which it keeps while the source is stopped."""
        resource = self._resources.get(uri)
        if resource is None or (resource.source_stopped and uri not in held):
            return None
        return resource

    def resources(self, room_id: str) -> list[Resource]:
        """The room's listed resources: what media.published / media.unpublished said."""
        return [
            r for r in self._resources.values() if r.room_id == room_id and not r.source_stopped
        ]

    def subscribe(self, uri: str, *, codec: str | None) -> SubscriberTrack:
        """A track that delivers resource `uri` (for rtc2rtmp and other in-process readers):
        packets when the resource is encoded in `codec`, frames otherwise."""
        resource = self._resources.get(uri)
        if resource is None:
            raise KeyError(uri)
        track = SubscriberTrack(resource.kind, self._relay, codec=codec)
        track.attach(uri, resource.source)
        return track

    # --- peers ---------------------------------------------------------------------------

    def peer_count(self) -> int:
        return len(self._peers)

    def has_room(self, room_id: str) -> bool:
        """Whether any peer or resource of the room lives here."""
        return any(key[0] == room_id for key in self._peers) or any(
            resource.room_id == room_id for resource in self._resources.values()
        )

    def connection(self, room_id: str, user_id: str) -> RTCPeerConnection | None:
        """The client's current peer connection, if any (monitoring and tests)."""
        peer = self._peers.get((room_id, user_id))
        return peer.pc if peer is not None else None

    async def exchange(
        self, room_id: str, user_id: str, offer: str, subscribe: list[str]
    ) -> ExchangeResult:
        key = (room_id, user_id)
        self._refuse_if_closing(key)
        async with self._locks.hold(key):
            with ports_for_new_peers(self._udp_ports):
                return await self._exchange(key, offer, subscribe)

    def _refuse_if_closing(self, key: ClientKey) -> None:
        """During shutdown an exchange is refused: an expected 50000, one line, no traceback."""
        if self._closing:
            log.warning("room %s: refused an exchange from %s: shutting down", *key)
            raise shutting_down()

    async def exit(self, room_id: str, user_id: str) -> bool:
        """Tear the client's connection down; False if it had none."""
        key = (room_id, user_id)
        async with self._locks.hold(key):
            peer = self._peers.pop(key, None)
        if peer is None:
            return False
        await self._close_peer(peer)
        return True

    async def _exchange(self, key: ClientKey, offer: str, subscribe: list[str]) -> ExchangeResult:
        self._refuse_if_closing(key)  # close() may have run while this waited for the lock
        # Every refusal comes before any change: a bad offer leaves a working connection alone.
        info = checked_offer(key, offer)
        peer = self._peers.get(key)
        wanted = self._wanted(subscribe, peer)
        renegotiating = peer is not None and peer.offer.ice_ufrag == info.ice_ufrag
        if peer is not None and renegotiating:
            problem = sdp_check.renegotiation_problem(peer.offer, info)
            if problem is not None:
                raise refused(key, problem)
        plan = plan_subscriptions(info, wanted, peer if renegotiating else None)
        if peer is not None and not renegotiating:
            # A new RTCPeerConnection on the client: the old one is gone with it.
            self._peers.pop(key, None)
            await self._close_peer(peer)
            peer = None

        offer = prefer_codecs(offer, info, plan)

        created = peer is None
        if peer is None:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
            peer = Peer(key=key, pc=pc, offer=info)
        try:
            await self._negotiate(peer, offer, info, plan)
            # close() ran meanwhile: it could not see this peer, so it must not stay.
            self._refuse_if_closing(key)
        except BaseException:
            # aiortc's state after a failed negotiation is not worth trusting: drop it all,
            # a half-created connection included, so no socket or task outlives the reply.
            if self._peers.get(key) is peer:
                del self._peers[key]
            await self._close_peer(peer)
            raise
        peer.offer = info
        if created:
            self._peers[key] = peer
            self._watch(peer)
        local = peer.pc.localDescription
        published = [peer.published[m.mid] for m in info.media if m.mid in peer.published]
        subscribed = [
            Subscribed(slot.uri, mid, MEDIA_TYPES[slot.kind])
            for mid, slot in peer.slots.items()
            if slot.uri
        ]
        return ExchangeResult(local.sdp, published, subscribed)

    def _wanted(self, subscribe: list[str], peer: Peer | None) -> list[Resource]:
        held = {slot.uri for slot in peer.slots.values()} if peer is not None else set()
        wanted: list[Resource] = []
        for uri in subscribe:
            resource = self.available(uri, held=held)
            if resource is None:
                raise bad_body(f"subscribeList: no resource {shown(uri)}")
            if resource not in wanted:
                wanted.append(resource)
        return wanted

    async def _negotiate(
        self,
        peer: Peer,
        offer: str,
        info: sdp.SessionInfo,
        plan: dict[str, Resource],
    ) -> None:
        with refused_by_aiortc(peer.key):
            await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        self._apply(peer, info, plan)  # ours: an error here is a bug (50000)
        with refused_by_aiortc(peer.key):
            answer = await peer.pc.createAnswer()
            await peer.pc.setLocalDescription(answer)

    def _apply(self, peer: Peer, info: sdp.SessionInfo, plan: dict[str, Resource]) -> None:
        room_id, user_id = peer.key
        sections = {m.mid: m for m in info.media}
        for transceiver in peer.pc.getTransceivers():
            mid = transceiver.mid
            section = sections.get(mid or "")
            if mid is None or section is None:
                continue
            # publishing: the client sends on this m-line
            remote = transceiver.receiver.track
            if section.client_sends and mid not in peer.published and remote is not None:
                source = _received_source(transceiver, section.kind)
                msid = section.msid_stream or mid
                resource = self.publish(room_id, user_id, section.kind, msid, source)
                peer.published[mid] = resource
                peer.pumps[mid] = self._spawn(
                    _pump(remote, source), f"livesignal-media-pump-{resource.uri}"
                )
            elif not section.client_sends and mid in peer.published:
                self._unpublish(peer, mid)
            # subscribing: the client receives resource plan[mid] on this m-line
            target = plan.get(mid)
            slot = peer.slots.get(mid)
            if target is not None:
                if slot is None:
                    # The sender's codec is fixed when it starts: the one negotiated now.
                    codec = negotiated_codec(transceiver)
                    slot = SubscriberTrack(section.kind, self._relay, codec=codec)
                    forward_keyframe_requests(transceiver.sender, slot.request_keyframe)
                    peer.slots[mid] = slot
                if slot.uri != target.uri:  # uris are never reused, so equal = same source
                    slot.attach(target.uri, target.source)
                transceiver.sender.replaceTrack(slot)
            elif slot is not None and slot.uri:
                slot.detach()
            set_direction(transceiver, section, target is not None)

    def _unpublish(self, peer: Peer, mid: str) -> None:
        resource = peer.published.pop(mid, None)
        pump = peer.pumps.pop(mid, None)
        if pump is not None:
            pump.cancel()
        if resource is not None:
            self.withdraw(resource.uri)

    async def _close_peer(self, peer: Peer) -> None:
        if peer.closed:
            return
        peer.closed = True
        for mid in list(peer.published):
            self._unpublish(peer, mid)
        for slot in peer.slots.values():
            slot.stop()
        peer.slots.clear()
        await peer.pc.close()
        log.info("room %s: %s disconnected", *peer.key)

    def _watch(self, peer: Peer) -> None:
        @peer.pc.on("connectionstatechange")
        def _on_state() -> None:
            state = peer.pc.connectionState
            if state in ("failed", "closed") and not peer.closed:
                log.info("room %s: %s connection %s", peer.key[0], peer.key[1], state)
                self._spawn(self._drop(peer), "livesignal-media-drop")

    async def _drop(self, peer: Peer) -> None:
        async with self._locks.hold(peer.key):
            if self._peers.get(peer.key) is peer:
                del self._peers[peer.key]
        await self._close_peer(peer)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def close(self) -> None:
        """Close every peer and withdraw every resource (application shutdown)."""
        self._closing = True
        peers = list(self._peers.values())
        self._peers.clear()
        for peer in peers:
            await self._close_peer(peer)
        for uri in list(self._resources):
            self.withdraw(uri)
        pending = [t for t in self._background if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _received_source(transceiver: RTCRtpTransceiver, kind: str) -> FeedTrack:
    """The source track of what the client publishes on this transceiver.

    Encoded frames are tapped out of aiortc's receiver before decoding when the codec is one
    the gateway forwards; otherwise aiortc decodes them and the source carries frames.
    """
    codec = negotiated_codec(transceiver)
    if codec in FORWARDED_CODECS:
        source = FeedTrack(kind, codec=codec)
        if tap_encoded_frames(transceiver.receiver, source):
            return source
    CENSUS.decoder_started(f"aiortc-{codec or kind}")
    return FeedTrack(kind)


async def _pump(remote: MediaStreamTrack, source: FeedTrack) -> None:
    """Move a publisher's decoded frames into the resource's source track, and end it when
    the received track ends (a tapped receiver's track carries nothing but its end)."""
    try:
        while True:
            source.feed(await remote.recv())
    except MediaStreamError:
        pass
    finally:
        source.stop()


async def _drain(proxy: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await proxy.recv()
