"""One client's peer: its RTCPeerConnection and what it publishes and receives on each m-line.

The media server (sfu.py) keeps one `Peer` per client and changes it under that client's lock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection

from livesignal.media.resource import Resource
from livesignal.media.sdp import parse as sdp
from livesignal.media.tracks import SubscriberTrack

ClientKey = tuple[str, str]  # (room id, user id)


@dataclass(eq=False)
class Peer:
    key: ClientKey
    pc: RTCPeerConnection
    offer: sdp.SessionInfo  # the last offer it took: a renegotiation must keep its m-lines
    published: dict[str, Resource] = field(default_factory=dict)  # mid -> resource
    pumps: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # mid -> pump
    slots: dict[str, SubscriberTrack] = field(default_factory=dict)  # mid -> sender track
    closed: bool = False
