from __future__ import annotations

from tests.conftest import Harness


async def test_create_start_join(harness: Harness) -> None:
    created = await harness.call("POST", "/client/live/room/instance", "alice", json={"title": "t"})
    assert created.code == 0, created.body
    live_id = created.data["live_id"]
    started = await harness.call("PUT", f"/client/live/room/{live_id}", "alice")
    assert started.data["live_status"] == 1
    joined = await harness.call("POST", f"/client/live/room/user/{live_id}", "bob")
    assert joined.data["online_count"] == 2
    harness.advance(16)
    await harness.sweep()
    info = await harness.call("GET", f"/client/live/room/info/{live_id}", "carol")
    assert info.data["online_count"] == 0
    assert info.data["anchor_status"] == 0
