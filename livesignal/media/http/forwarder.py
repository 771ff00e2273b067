"""`Forwarder`: the HTTP client that relays a gateway request to another node, and back.

The decision to forward (the room's media lives elsewhere) is forwarding.py's; this module
only carries the request: the headers it is decided by, marked as forwarded, and the body.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

FORWARDED_HEADER = "X-Livesignal-Forwarded"
# Headers a gateway request is decided by; the rest (hop-by-hop, host) stay behind.
FORWARDED_REQUEST_HEADERS = ("Token", "Room-Id", "RoomId", "Content-Type")
FORWARD_TIMEOUT = 30.0  # an /exchange waits for ICE gathering on the owner


class Forwarder:
    """Sends a gateway request on to the node that owns the room, and its answer back."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request, address: str, body: bytes) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)
            )
        headers = {
            name: request.headers[name]
            for name in FORWARDED_REQUEST_HEADERS
            if name in request.headers
        }
        headers[FORWARDED_HEADER] = "1"
        async with self._session.request(
            request.method, f"http://{address}{request.path_qs}", headers=headers, data=body
        ) as answer:
            payload = await answer.read()
            return web.Response(
                status=answer.status,
                body=payload,
                content_type=answer.content_type,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
