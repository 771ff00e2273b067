"""A shared decoder that runs slower than real time stays bounded and keeps decodable input.

The decoder is made deliberately slow (its decode step blocks until the test lets it go)
while a source is fed much faster: what waits for it must stay bounded, skip to a keyframe
rather than hand the decoder a broken GOP, and ask the publisher for that keyframe.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiortc.contrib.media import MediaRelay
from av.packet import Packet

from livesignal.media import decoding, feed
from livesignal.media.decoding import MAX_DECODE_BACKLOG, DecodeBacklog, SharedDecoder
from livesignal.media.feed import FeedTrack

from ._rtc import wait_for

GOP = 90  # packets from one keyframe to the next: longer than the backlog


def packet(pts: int, *, keyframe: bool) -> Packet[Any]:
    one = Packet(b"\x00" * 16)
    one.pts = one.dts = pts
    one.is_keyframe = keyframe
    return one


class SlowDecoder:
    """Stands in for `decoding._decode`: blocks until released, records what it was given."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.given: list[tuple[int, bool]] = []  # (pts, keyframe) of each packet, in order

    def __call__(self, decoder: Any, packets: list[Packet[Any]]) -> tuple[list[Any], bool]:
        self.started.set()
        assert self.release.wait(10)
        self.given += [(int(p.pts or 0), bool(p.is_keyframe)) for p in packets]
        return [], False


async def test_a_decoder_slower_than_real_time_holds_a_bounded_backlog_from_a_keyframe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow = SlowDecoder()
    monkeypatch.setattr(decoding, "_decode", slow)
    monkeypatch.setattr(feed, "KEYFRAME_REQUEST_INTERVAL", 0.0)  # count every request
    source = FeedTrack("video", codec="vp8")
    requests: list[int] = []  # how many packets had been fed at each keyframe request
    fed = 0
    source.on_keyframe_request = lambda: requests.append(fed)
    decoder = SharedDecoder(source, MediaRelay())
    decoder.acquire()
    try:
        source.feed(packet(0, keyframe=True))
        fed = 1
        await wait_for(slow.started.is_set, 5, interval=0.01)  # busy with the first packet

        # Ten times what the backlog holds arrives while the decoder is stuck, every item
        # relayed as it comes (a source feeding in real time).
        total = 10 * MAX_DECODE_BACKLOG
        for pts in range(1, total):
            source.feed(packet(pts, keyframe=pts % GOP == 0))
            fed = pts + 1
            for _ in range(3):
                await asyncio.sleep(0)
        source.feed(packet(total, keyframe=True))  # the last one fed: where the test ends
        for _ in range(3):
            await asyncio.sleep(0)

        slow.release.set()
        await wait_for(lambda: slow.given and slow.given[-1][0] == total, 5, interval=0.01)
    finally:
        slow.release.set()
        decoder.release()
        source.stop()

    # What waited for the decoder was bounded: all but about one backlog's worth was skipped.
    assert len(slow.given) <= MAX_DECODE_BACKLOG + 1
    # ... and stays decodable: after a skipped packet the decoder's next one is a keyframe.
    for (before, _), (pts, keyframe) in zip(slow.given, slow.given[1:], strict=False):
        assert pts == before + 1 or keyframe, f"packet {pts} follows {before} without a keyframe"
    # ... and the publisher was asked for a keyframe when the backlog had none to skip to.
    assert [count for count in requests if count > 1] != []


async def test_a_full_audio_backlog_drops_its_oldest_packet() -> None:
    source = FeedTrack("audio", codec="opus")
    backlog = DecodeBacklog(source, limit=5)
    for pts in range(8):
        backlog.put(packet(pts, keyframe=True))  # every audio packet stands alone
    assert len(backlog) == 5
    assert [p.pts for p in await backlog.take()] == [3, 4, 5, 6, 7]
    assert backlog.dropped == 3
