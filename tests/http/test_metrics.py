"""GET /metrics: socket and fan-out figures in Prometheus' text format, unauthenticated."""

from __future__ import annotations

import asyncio
import re

from livesignal.client import SignalClient
from tests.conftest import Connect, Harness, HarnessFactory, live_room

SAMPLE = re.compile(r'^(\w+)(?:\{le="([^"]+)"\})? (\S+)$')


async def scrape(harness: Harness) -> dict[str, float]:
    """Every sample of GET /metrics: name (with `:le` for histogram buckets) → value."""
    async with harness.session.get(harness.base_url + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match is not None, line
        name, le, value = match.groups()
        samples[f"{name}:{le}" if le else name] = float(value)
    return samples


async def test_metrics_count_sockets_and_the_frames_and_writes_of_the_fan_out(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    harness = await make_harness({"ws": {"flush_interval": 0.2}})
    before = await scrape(harness)
    assert before["livesignal_sockets"] == 0
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    viewers: list[SignalClient] = []
    for index in range(3):
        viewer = await connect(harness, f"viewer{index}")
        await viewer.request("room.join", live_id=live_id)
        viewers.append(viewer)
    # Every earlier member hears of every later join: nothing is left queued.
    for index, member in enumerate([anchor, *viewers[:-1]]):
        for _ in range(3 - index):
            await member.next_event("member.joined")
    joined = await scrape(harness)
    assert joined["livesignal_sockets"] == 4
    assert joined["livesignal_rooms_attached"] == 1
    # A burst of 20 messages inside one interval, sent from a socket not attached to the room
    # (so no reply takes the room's frames along early): 4 sockets x 20 frames, few writes.
    sender = await connect(harness, "anchor")
    await asyncio.gather(
        *(sender.request("chat.send", live_id=live_id, text=f"m{i}") for i in range(20))
    )
    for viewer in [anchor, *viewers]:
        for _ in range(20):
            await viewer.next_event("chat.message")
    after = await scrape(harness)
    frames = (
        after["livesignal_room_event_frames_total"] - joined["livesignal_room_event_frames_total"]
    )
    writes = (
        after["livesignal_room_event_writes_total"] - joined["livesignal_room_event_writes_total"]
    )
    assert frames == 4 * 20
    assert writes <= 4 * 4  # coalesced: a few writes per socket, not one per frame
    # One delay observation per frame delivered, each within the interval and its write.
    count = (
        after["livesignal_fanout_delay_seconds_count"]
        - joined["livesignal_fanout_delay_seconds_count"]
    )
    assert count == frames
    within = (
        after["livesignal_fanout_delay_seconds_bucket:0.25"]
        - joined["livesignal_fanout_delay_seconds_bucket:0.25"]
    )
    assert within == count
    assert (
        after["livesignal_fanout_delay_seconds_bucket:+Inf"]
        == after["livesignal_fanout_delay_seconds_count"]
    )
