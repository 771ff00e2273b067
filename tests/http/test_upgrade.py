"""The HTTP server recognises a `/ws` upgrade (livesignal/http/upgrade.py) from the request
head: parsed sans I/O, and on any request of a kept-alive connection."""

from __future__ import annotations

import base64

import aiohttp

from livesignal.http.upgrade import might_be_upgrade, parse_upgrade
from livesignal.signal.ws.handshake import accept_key
from tests.conftest import Harness


def test_an_upgrade_head_is_recognised_and_anything_else_left_to_http() -> None:
    key = base64.b64encode(b"0123456789abcdef").decode()
    head = (
        f"GET /ws?token=abc&x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
        f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    request = parse_upgrade(head)
    assert request is not None
    assert request.query("token") == "abc" and request.problem() is None and request.version_ok()
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455
    assert (
        might_be_upgrade(b"GE") and might_be_upgrade(b"GET /ws?t") and might_be_upgrade(b"GET /ws")
    )
    assert not might_be_upgrade(b"GET /wss") and not might_be_upgrade(b"POST /ws")
    for other in (
        head.replace(b"GET /ws?", b"GET /wsx?"),
        head.replace(b"HTTP/1.1", b"HTTP/1.0"),
        head.replace(b"Upgrade: WebSocket\r\n", b""),  # a plain GET /ws: HTTP refuses it
        head.replace(b"Host: h\r\n", b"Host: h\r\nContent-Length: 3\r\n"),
        head.replace(b"Host: h", b"Host : h"),
    ):
        assert parse_upgrade(other) is None
    missing_key = parse_upgrade(head.replace(f"Sec-WebSocket-Key: {key}\r\n".encode(), b""))
    assert missing_key is not None and missing_key.problem() is not None


async def test_a_socket_opens_on_a_kept_alive_connection_that_served_rest_first(
    harness: Harness,
) -> None:
    """The upgrade is recognised on any request of a connection, not only its first."""
    token = harness.token("alice")
    connector = aiohttp.TCPConnector(limit=1)  # one connection: REST, then the upgrade on it
    async with aiohttp.ClientSession(connector=connector) as session:
        profile = harness.base_url + "/client/user/profile"
        for _ in range(2):
            async with session.get(profile, headers={"Authorization": token}) as answer:
                assert answer.status == 200
        async with session.ws_connect(f"{harness.ws_url}?token={token}") as ws:
            welcome = await ws.receive_json(timeout=5)
            assert welcome["type"] == "welcome"
            await ws.send_str('{"id": 1, "type": "user.profile", "data": {}}')
            reply = await ws.receive_json(timeout=5)
            assert (reply["id"], reply["code"]) == (1, 0)
