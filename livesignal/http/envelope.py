"""The REST envelope (PROTOCOL §3.1): request ids, success and error bodies, JSON bodies."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

import orjson
from aiohttp import web

from livesignal.signal.model.errors import ApiError, BadRequest, TooManyRequests

MAX_BODY = 64 * 1024
REQUEST_ID_HEADER = "X-Reqid"
MAX_REQUEST_ID = 128


# Generated ids: a random per-process prefix and a counter, unique without a syscall each.
_ID_PREFIX = secrets.token_hex(6)
_id_counter = itertools.count(1)


def request_id_of(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER)
    if given and len(given) <= MAX_REQUEST_ID:
        return given
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


def _respond(status: int, body: dict[str, Any], request_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={REQUEST_ID_HEADER: request_id},
    )


def success(request_id: str, data: Any) -> web.Response:
    body = {"request_id": request_id, "code": 0, "message": "success", "data": data}
    return _respond(200, body, request_id)


def failure(request_id: str, error: ApiError) -> web.Response:
    body = {"request_id": request_id, "code": error.code, "message": error.message}
    response = _respond(error.http_status, body, request_id)
    if isinstance(error, TooManyRequests) and error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def plain_failure(request_id: str, http_status: int, message: str) -> web.Response:
    body = {"request_id": request_id, "code": http_status, "message": message}
    return _respond(http_status, body, request_id)


async def read_body(request: web.Request) -> bytes:
    """The whole request body, however it is chunked; BadRequest if > 64 KiB."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"body larger than {MAX_BODY} bytes")
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(MAX_BODY):
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty); BadRequest if malformed or > 64 KiB."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("malformed JSON body") from exc
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value
