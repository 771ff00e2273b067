"""A subscriber that falls behind its publisher loses whole GOPs, never single packets.

A `SubscriberTrack` that forwards the publisher's packets (the subscriber took its codec) is
fed far faster than it is read, as when its sender stalls. What waits for it must stay
bounded, what it receives must always resume at a keyframe (a packet without the ones
before it is undecodable until the next one), and the publisher must be asked for a
keyframe when none was queued to resume at. Audio packets each stand alone: the oldest go.

No sleeps: every packet is moved through the relay by yielding to the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from av.packet import Packet

from livesignal.media import feed
from livesignal.media.backlog import KeyframeBacklog
from livesignal.media.feed import FeedTrack
from livesignal.media.tracks import MAX_SUBSCRIBER_BACKLOG, SubscriberTrack

LIMIT = MAX_SUBSCRIBER_BACKLOG


def packet(pts: int, *, keyframe: bool) -> Packet[Any]:
    one = Packet(b"\x00" * 16)
    one.pts = one.dts = pts
    one.is_keyframe = keyframe
    return one


async def settle() -> None:
    """Let a fed packet travel feed → relay → subscriber's forwarder → its backlog."""
    for _ in range(5):
        await asyncio.sleep(0)


class Publisher:
    """A source the way a WebRTC publisher's tap feeds it: keyframes on request, counted."""

    def __init__(self, kind: str, codec: str) -> None:
        self.source = FeedTrack(kind, codec=codec)
        self.fed = 0
        self.requests: list[int] = []  # how many packets had been fed at each request
        self.source.on_keyframe_request = lambda: self.requests.append(self.fed)

    async def send(self, pts: int, *, keyframe: bool) -> None:
        self.source.feed(packet(pts, keyframe=keyframe))
        self.fed += 1
        await settle()


@pytest.fixture(autouse=True)
def every_keyframe_request_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed, "KEYFRAME_REQUEST_INTERVAL", 0.0)


@pytest.fixture
def tracks() -> Iterator[list[SubscriberTrack | FeedTrack]]:
    made: list[SubscriberTrack | FeedTrack] = []
    yield made
    for track in made:
        track.stop()


async def subscribed(publisher: Publisher, tracks: list[Any]) -> SubscriberTrack:
    """A subscriber taking the publisher's codec, whose consumer has received packet 0 (a
    keyframe) and then stalls."""
    source = publisher.source
    track = SubscriberTrack(source.kind, MediaRelay(), codec=source.codec)
    tracks += [track, source]
    track.attach(f"rtc://test/{source.kind}", source)
    assert track.forwards_packets
    first = asyncio.create_task(track.recv())  # forwarding starts with the first recv()
    await settle()
    await publisher.send(0, keyframe=True)
    assert (await asyncio.wait_for(first, 1)).pts == 0
    return track


async def drain(track: SubscriberTrack, last: int) -> list[tuple[int, bool]]:
    """What the consumer receives when it reads again: (pts, keyframe) up to pts `last`."""
    received: list[tuple[int, bool]] = []
    while not received or received[-1][0] != last:
        item = await asyncio.wait_for(track.recv(), 1)
        assert isinstance(item, Packet)
        received.append((int(item.pts or 0), bool(item.is_keyframe)))
    assert track.queued == 0
    return received


def assert_resumes_at_keyframes(received: list[tuple[int, bool]]) -> None:
    stream = [(0, True), *received]
    for (before, _), (pts, keyframe) in zip(stream, stream[1:], strict=False):
        assert pts == before + 1 or keyframe, f"packet {pts} follows {before} without a keyframe"


@pytest.mark.parametrize("gop", [3 * LIMIT // 2, LIMIT // 10])
async def test_a_stalled_subscriber_is_bounded_and_resumes_at_a_keyframe(
    gop: int, tracks: list[Any]
) -> None:
    publisher = Publisher("video", "vp8")
    track = await subscribed(publisher, tracks)
    requests_at_join = len(publisher.requests)

    total = 8 * LIMIT  # the consumer reads nothing while all of this arrives
    most_queued = 0
    for pts in range(1, total):
        await publisher.send(pts, keyframe=pts % gop == 0)
        most_queued = max(most_queued, track.queued)
    await publisher.send(total, keyframe=True)  # the last one: where the test ends

    received = await drain(track, total)
    # Bounded: it never held more than its limit, and came close (the test did fill it).
    assert most_queued == LIMIT
    assert len(received) <= LIMIT
    # Decodable: wherever packets were skipped, the next one the subscriber gets is a
    # keyframe (packet 0, a keyframe, was received before the stall).
    assert_resumes_at_keyframes(received)
    assert received[0][1], "after falling behind, the first packet is a keyframe"
    behind_requests = publisher.requests[requests_at_join:]
    if gop > LIMIT:
        # No keyframe was queued to skip to: the publisher was asked for one.
        assert behind_requests and min(behind_requests) > LIMIT
    else:
        # A queued keyframe was always there to skip to: the publisher was not disturbed.
        assert behind_requests == []


async def test_after_a_skip_the_subscriber_waits_for_the_next_keyframe(
    tracks: list[Any],
) -> None:
    publisher = Publisher("video", "h264")
    track = await subscribed(publisher, tracks)
    for pts in range(1, LIMIT + 2):  # one more than fits, none of them a keyframe
        await publisher.send(pts, keyframe=False)
    assert track.queued == 0  # all dropped: they continue a GOP the consumer cannot finish
    asked = len(publisher.requests)
    assert asked > 0

    # The subscriber reads again, but deltas still arriving are useless to it: it gets
    # nothing until the keyframe the publisher was asked for, and asks again meanwhile.
    waiting = asyncio.create_task(track.recv())
    for pts in range(LIMIT + 2, LIMIT + 12):
        await publisher.send(pts, keyframe=False)
    assert not waiting.done() and len(publisher.requests) > asked
    await publisher.send(LIMIT + 12, keyframe=True)
    await publisher.send(LIMIT + 13, keyframe=False)
    resumed = await asyncio.wait_for(waiting, 1)
    assert (resumed.pts, resumed.is_keyframe) == (LIMIT + 12, True)
    assert await drain(track, LIMIT + 13) == [(LIMIT + 13, False)]


async def test_a_stalled_audio_subscriber_keeps_the_newest_packets(tracks: list[Any]) -> None:
    publisher = Publisher("audio", "opus")
    track = await subscribed(publisher, tracks)
    requests_at_join = len(publisher.requests)
    total = 2 * LIMIT
    for pts in range(1, total + 1):
        await publisher.send(pts, keyframe=True)  # the tap marks every Opus packet so
        assert track.queued <= LIMIT

    received = await drain(track, total)
    assert [pts for pts, _ in received] == list(range(total - LIMIT + 1, total + 1))
    assert len(publisher.requests) == requests_at_join  # no audio packet waits for another


async def test_a_stopped_subscriber_ends_its_consumer(tracks: list[Any]) -> None:
    publisher = Publisher("video", "vp8")
    track = await subscribed(publisher, tracks)
    await publisher.send(1, keyframe=False)
    waiting = asyncio.create_task(track.recv())
    assert (await asyncio.wait_for(waiting, 1)).pts == 1
    waiting = asyncio.create_task(track.recv())
    await settle()
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 1)


async def test_the_backlog_skips_to_a_queued_keyframe_or_else_waits_for_one() -> None:
    requests: list[int] = []
    backlog: KeyframeBacklog[Packet[Any]] = KeyframeBacklog(
        "video", 5, lambda: requests.append(1), "test"
    )
    for pts, keyframe in enumerate([True, False, False, True, False]):
        backlog.put(packet(pts, keyframe=keyframe))
    backlog.put(packet(5, keyframe=False))  # full: the oldest GOP goes, up to keyframe 3
    assert [p.pts for p in await backlog.take()] == [3, 4, 5]
    assert backlog.dropped == 3 and requests == []

    for pts in range(6, 11):  # continues what was taken
        backlog.put(packet(pts, keyframe=False))
    backlog.put(packet(11, keyframe=False))  # full, and no keyframe queued to skip to
    assert len(backlog) == 0 and backlog.waiting_for_keyframe and requests == [1]
    backlog.put(packet(12, keyframe=False))  # still useless; the publisher is asked again
    assert len(backlog) == 0 and requests == [1, 1]
    backlog.put(packet(13, keyframe=True))
    backlog.put(packet(14, keyframe=False))
    assert not backlog.waiting_for_keyframe
    assert [p.pts for p in await backlog.take()] == [13, 14]
    assert backlog.dropped == 3 + 7


async def test_a_full_audio_backlog_drops_the_oldest_packet_whatever_its_flag() -> None:
    requests: list[int] = []
    backlog: KeyframeBacklog[Packet[Any]] = KeyframeBacklog(
        "audio", 3, lambda: requests.append(1), "test"
    )
    for pts in range(6):
        backlog.put(packet(pts, keyframe=False))  # an audio packet stands alone regardless
    assert [p.pts for p in await backlog.take()] == [3, 4, 5]
    assert backlog.dropped == 3 and requests == []
