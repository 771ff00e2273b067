"""The Python client (livesignal/client.py, PROTOCOL §10) against a real server."""

from __future__ import annotations

from tests.conftest import Connect, Harness, live_room


async def test_client_auto_reconnect_resumes_the_room(harness: Harness, connect: Connect) -> None:
    anchor = await connect(harness, "anchor")
    live_id = await live_room(anchor)
    viewer = await connect(harness, "viewer", auto_reconnect=True)
    await viewer.request("room.join", live_id=live_id)
    first_session = viewer.welcome["session_id"]
    assert viewer._ws is not None
    viewer._ws.transport.abort()
    await anchor.next_event("member.left")
    await anchor.request("chat.send", live_id=live_id, text="while away")
    # The client reconnects by itself and replays what it missed, in order.
    missed = await viewer.next_event("chat.message")
    assert missed["data"]["text"] == "while away"
    assert viewer.welcome["session_id"] != first_session
    await anchor.request("chat.send", live_id=live_id, text="back")
    assert (await viewer.next_event("chat.message"))["data"]["text"] == "back"
    assert viewer.last_resume is not None and viewer.last_resume["recovered"] is True
