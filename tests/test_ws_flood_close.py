"""A server-side close reaches a peer that floods the socket: the server keeps reading until
the closing handshake ends, so the kernel never answers the peer's unread data with a reset."""

from __future__ import annotations

import orjson

from tests.conftest import Connect, HarnessFactory, live_room
from tests.rawws import StalledClient


async def test_pipelining_slow_consumer_gets_its_4009_not_a_reset(
    make_harness: HarnessFactory, connect: Connect
) -> None:
    # The transport's behaviour, whatever the backend: memory serves the flood fastest.
    harness = await make_harness(backend="memory")
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    slow = await StalledClient.connect(f"{harness.ws_url}?token={harness.token('flooder')}")
    try:
        join = {"id": 0, "type": "room.join", "data": {"live_id": live_id}}
        await slow.send_text(orjson.dumps(join).decode())
        await anchor.next_event("member.joined")
        # ~1.8 MB of pipelined requests whose ~1 KB replies it does not read: well past the
        # 1 MiB bound, and still sending when the server decides to close.
        request = orjson.dumps({"id": 1, "type": "room.info", "data": {"live_id": live_id}})
        for _ in range(20_000):
            slow.protocol.send_text(request)
        for data in slow.protocol.data_to_send():
            slow.writer.write(data)
        left = await anchor.next_event("member.left")
        assert left["data"] == {"user_id": "flooder", "reason": "leave"}
        # Reading at last, the client finds every reply the server had queued, then 4009.
        assert await slow.read_until_close() == 4009
    finally:
        slow.abort()
