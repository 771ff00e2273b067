"""Reading and checking a gateway request: its Token, its body and the fields handlers take.

Every refusal is a `GatewayError` (40001 for the Token, 40002 for the body), raised before a
handler changes anything.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from livesignal.media.http.gateway import GATEWAY_KEY
from livesignal.media.result_codes import bad_body, bad_token, shown
from livesignal.media.rtmp.publish import parse_rtmp_url

MAX_BODY_BYTES = 1024 * 1024  # PROTOCOL §6: a larger body is 40002
MAX_RTMP_URL_LENGTH = 2048


def granted_client(request: web.Request, room_id: str | None = None) -> tuple[str, str]:
    """(room id, user id) of a request whose Token grants that room; else 40001."""
    gateway = request.app[GATEWAY_KEY]
    token = request.headers.get("Token", "").strip()
    if not token:
        raise bad_token("Token header is missing")
    room = room_id or request.headers.get("Room-Id") or request.headers.get("RoomId")
    if not room:
        raise bad_token("Room-Id header is missing")
    try:
        grant = gateway.tokens.verify(token, gateway.clock.now())
    except ValueError as exc:
        raise bad_token(f"invalid Token: {exc}") from exc
    if grant.room_name != room or not grant.user_id:
        raise bad_token("Token does not grant this room")
    return room, grant.user_id


async def bounded_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None if it is over `limit` bytes.

    Read here rather than with `request.read()`, whose own cap (the app's client_max_size)
    raises an HTTP 413 that would escape the gateway's reply format.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await bounded_body(request, MAX_BODY_BYTES)
    if raw is None:
        raise bad_body(f"the body is over {MAX_BODY_BYTES // 1024 // 1024} MiB")
    if not raw.strip():
        raise bad_body("a JSON object body is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_body(f"malformed JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_body("the body must be a JSON object")
    return body


def body_section(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_body(f"{name} must be an object")
    return value


def flag(section: dict[str, Any], name: str, where: str) -> bool:
    value = section.get(name, True)
    if not isinstance(value, bool):
        raise bad_body(f"{where}.{name} must be true or false")
    return value


def uri_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_body(f"{where} must be an array")
    uris: list[str] = []
    for index, item in enumerate(value):
        uri = item.get("uri") if isinstance(item, dict) else None
        if not isinstance(uri, str) or not uri:
            raise bad_body(f"{where}[{index}].uri must be a non-empty string")
        uris.append(uri)
    return uris


def rtmp_url(value: Any, where: str, *, pushed: bool) -> str:
    """A client-given RTMP URL, checked here so that a worker thread never retries a bad one."""
    if not isinstance(value, str) or not value.startswith(("rtmp://", "rtmps://")):
        raise bad_body(f"{where} must be an rtmp:// URL")
    if len(value) > MAX_RTMP_URL_LENGTH or not value.isprintable() or " " in value:
        raise bad_body(f"{where} must be at most {MAX_RTMP_URL_LENGTH} printable characters")
    if pushed:
        # The pusher speaks plain RTMP itself (rtmp/publish.py): it must be able to parse this.
        try:
            parse_rtmp_url(value)
        except ValueError as exc:
            raise bad_body(f"{where}: {shown(str(exc))}") from exc
    return value


def offer_sdp(body: dict[str, Any]) -> str:
    description = body.get("sdp")
    if not isinstance(description, dict):
        raise bad_body("sdp must be an object {type, sdp}")
    if description.get("type") != "offer":
        raise bad_body('sdp.type must be "offer"')
    text = description.get("sdp")
    if not isinstance(text, str) or not text.strip():
        raise bad_body("sdp.sdp must be a non-empty string")
    return text
