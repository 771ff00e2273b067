"""Taking a client's /exchange offer: what the gateway refuses, and how the answer is laid out.

An offer the gateway cannot take is a 40002 (`refused`, `checked_offer`, `refused_by_aiortc`);
for one it takes, `plan_subscriptions` assigns each subscribed resource an m-line,
`prefer_codecs` steers aiortc to codecs worth forwarding, and `set_direction` sets what each
transceiver sends and receives. No state here: the media server (sfu.py) applies all of it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from aiortc import RTCRtpTransceiver

from livesignal.media.ice import NoFreeUdpPort
from livesignal.media.peer import ClientKey, Peer
from livesignal.media.resource import Resource
from livesignal.media.result_codes import GatewayError, ResultCode, bad_body, shown
from livesignal.media.sdp import check as sdp_check
from livesignal.media.sdp import parse as sdp

log = logging.getLogger(__name__)


def refused(key: ClientKey, reason: str) -> GatewayError:
    """40002 for an offer the gateway cannot take: one INFO line, no traceback (not a bug)."""
    log.info("room %s: refused an offer from %s: %s", key[0], key[1], reason)
    return bad_body(f"sdp: {reason}")


def checked_offer(key: ClientKey, offer: str) -> sdp.SessionInfo:
    try:
        sdp_check.check_offer(offer)
        return sdp.parse_offer(offer)
    except ValueError as exc:
        raise refused(key, str(exc)) from exc


@contextlib.contextmanager
def refused_by_aiortc(key: ClientKey) -> Iterator[None]:
    """What aiortc raises while taking an offer comes from what the offer said: 40002.

    sdp/check.py refuses what it knows aiortc chokes on; this catches the rest (e.g. no codec
    in common). OSError stays a server fault: a 50000 the operator sees. A full UDP port
    range is one too, but an expected one: a clear 50000 and one warning, no traceback.
    """
    try:
        yield
    except NoFreeUdpPort as exc:
        log.warning(
            "room %s: refused a peer for %s: %s (media.udp_port_min..udp_port_max is full)",
            key[0],
            key[1],
            exc.message,
        )
        raise GatewayError(ResultCode.INTERNAL, exc.message) from exc
    except OSError:
        raise
    except Exception as exc:
        raise refused(key, f"offer not accepted: {type(exc).__name__}: {shown(str(exc))}") from exc


def _section(info: sdp.SessionInfo, mid: str) -> sdp.MediaSection:
    return next(m for m in info.media if m.mid == mid)


def prefer_codecs(offer: str, info: sdp.SessionInfo, plan: dict[str, Resource]) -> str:
    """Reorder the offer's codecs so that aiortc answers with the ones worth forwarding.

    A subscribed m-line takes its resource's codec when the client offers it: the packets
    are then forwarded as they are. A published video m-line takes H.264 when offered: an
    rtc2rtmp push then remuxes it into FLV instead of encoding it. A subscription's choice
    wins on an m-line that does both.
    """
    chosen: dict[str, str] = {}  # mid -> codec
    for section in info.media:
        if section.kind == "video" and section.client_sends and section.has_codec("H264"):
            chosen[section.mid] = "h264"
    for mid, resource in plan.items():
        codec = resource.source.codec
        if codec is not None and _section(info, mid).has_codec(codec):
            chosen[mid] = codec
    for codec in set(chosen.values()):
        offer = sdp.prefer_codec(offer, {mid for mid, c in chosen.items() if c == codec}, codec)
    return offer


def plan_subscriptions(
    info: sdp.SessionInfo, wanted: list[Resource], peer: Peer | None
) -> dict[str, Resource]:
    """Assign each wanted resource to one m-line the client receives on (mid -> resource).

    A resource keeps the m-line it already had; new ones take free recvonly m-lines first
    (a client adds one recvonly transceiver per subscription), then sendrecv ones.
    """
    receiving = [m for m in info.media if m.is_media and m.client_receives]
    plan: dict[str, Resource] = {}
    current = {slot.uri: mid for mid, slot in peer.slots.items() if slot.uri} if peer else {}
    for resource in wanted:
        mid = current.get(resource.uri)
        if mid is not None and any(m.mid == mid and m.kind == resource.kind for m in receiving):
            plan[mid] = resource
    for resource in wanted:
        if resource in plan.values():
            continue
        free = [m for m in receiving if m.kind == resource.kind and m.mid not in plan]
        free.sort(key=lambda m: m.direction != "recvonly")
        if not free:
            raise bad_body(
                f"subscribeList: the offer has no free {resource.kind} m-line to receive "
                f"{resource.uri!r} (add a recvonly transceiver per subscription)"
            )
        plan[free[0].mid] = resource
    return plan


def set_direction(transceiver: RTCRtpTransceiver, section: sdp.MediaSection, sending: bool) -> None:
    receiving = section.client_sends
    if sending and receiving:
        transceiver.direction = "sendrecv"
    elif sending:
        transceiver.direction = "sendonly"
    elif receiving:
        transceiver.direction = "recvonly"
    else:
        transceiver.direction = "inactive"
