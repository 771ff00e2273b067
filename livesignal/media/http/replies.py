"""What the gateway answers: the JSON reply of PROTOCOL §6 and nginx-rtmp's push refusal.

Gateway endpoints answer HTTP 200 with `resultCode` (and `message` on failure); nginx-rtmp's
`on_publish` reads only the status line, so a refused push is a plain 403.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from livesignal.media.result_codes import ResultCode


def reply(code: ResultCode, message: str | None = None, **fields: Any) -> web.Response:
    body: dict[str, Any] = {"resultCode": int(code)}
    if message is not None:
        body["message"] = message
    body.update(fields)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def refuse_push() -> web.Response:
    return web.Response(status=403, text="push refused")
