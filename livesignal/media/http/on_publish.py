"""nginx-rtmp's `on_publish` hook: whether nginx lets a push in (a WeChat mini-program's).

nginx-rtmp reads only the status line of the answer, so this is plain HTTP rather than the
gateway's JSON reply: 200 lets the push in, 403 refuses it, and no form makes it a 5xx.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from aiohttp import web

from livesignal.media.http.forwarder import FORWARDED_HEADER
from livesignal.media.http.forwarding import forward_push_check
from livesignal.media.http.gateway import GATEWAY_KEY
from livesignal.media.http.replies import refuse_push
from livesignal.media.http.requests import bounded_body
from livesignal.media.result_codes import shown

log = logging.getLogger(__name__)

# nginx-rtmp's on_publish form is a few hundred bytes: the call, the client and the push URL.
MAX_PUBLISH_FORM_BYTES = 16 * 1024
MAX_PUBLISH_FORM_FIELDS = 100
# The fields the push decision reads: one of each, or the form is refused (no guessing which).
PUBLISH_DECISION_FIELDS = ("app", "name", "key", "expire", "e", "token")


async def on_publish(request: web.Request) -> web.Response:
    """nginx-rtmp on_publish: 2xx lets the push in, anything else refuses it.

    Whatever form a client makes nginx send, the answer is 200 or 403, never a 5xx.
    """
    raw = await bounded_body(request, MAX_PUBLISH_FORM_BYTES)
    fields = _publish_form(raw)
    if fields is not None and raw is not None and FORWARDED_HEADER not in request.headers:
        forwarded = await forward_push_check(request, fields.get("name", ""), raw)
        if forwarded is not None:
            return forwarded
    if fields is None:
        log.info("refused a push: unreadable on_publish form")
        return refuse_push()
    app_name = fields.pop("app", "")
    stream = fields.pop("name", "")
    try:
        allowed = request.app[GATEWAY_KEY].wechat.on_publish(app_name, stream, fields)
    except Exception:
        # A bug, not the client's doing: logged as one, and the push stays out.
        log.exception("on_publish failed for %s", shown(f"/{app_name}/{stream}"))
        return refuse_push()
    if allowed:
        return web.Response(text="ok")
    return refuse_push()


def _publish_form(raw: bytes | None) -> dict[str, str] | None:
    """The urlencoded form's fields; None if too large, not UTF-8, or ambiguous.

    A decision field sent twice is refused rather than guessed: nginx-rtmp appends the
    pusher's own query string to the form, so a pusher could otherwise pick which copy counts.
    """
    if raw is None:
        return None
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PUBLISH_FORM_FIELDS,
        )
    except ValueError:  # UnicodeDecodeError included
        return None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields and name in PUBLISH_DECISION_FIELDS:
            return None
        fields[name] = value
    return fields
