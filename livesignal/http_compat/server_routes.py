"""`GET /server/auth/token`: app servers obtain client tokens, signed with Qiniu MAC (§2)."""

from __future__ import annotations

from aiohttp import web

from livesignal.http.appkeys import SERVICES
from livesignal.http.envelope import failure, read_body, request_id_of, success
from livesignal.signal.model.auth import qiniu_signing_string, verify_qiniu
from livesignal.signal.model.errors import ApiError, BadRequest, Forbidden, Unauthorized
from livesignal.signal.model.params import Params


async def issue_token(request: web.Request) -> web.Response:
    request_id = request_id_of(request)
    services = request.app[SERVICES]
    auth = services.settings.auth
    try:
        if not (auth.server_access_key and auth.server_secret_key):
            raise Forbidden("server API disabled: no server_access_key/server_secret_key")
        # The whole body: content.read(n) returns only what has arrived so far.
        body = await read_body(request) if request.can_read_body else b""
        path, _, query = request.raw_path.partition("?")
        signing_string = qiniu_signing_string(
            request.method,
            path,
            query,
            request.headers.get("Host", ""),
            request.headers.get("Content-Type"),
            body,
        )
        header = request.headers.get("Authorization")
        if not verify_qiniu(header, auth.server_access_key, auth.server_secret_key, signing_string):
            raise Unauthorized("bad Qiniu signature")
        params = Params(dict(request.query))
        user_id = params.text("user_id", max_len=128)
        expires_at = params.opt_int("expires_at")
        if expires_at is not None and expires_at <= services.clock.now():
            raise BadRequest("expires_at is in the past")
        token, exp = services.tokens.issue(
            user_id,
            services.clock.now(),
            app_id=params.opt_text("app_id") or "",
            device_id=params.opt_text("device_id") or "",
            expires_at=expires_at,
        )
    except ApiError as error:
        return failure(request_id, error)
    return success(request_id, {"access_token": token, "expires_at": exp})


def add_server_routes(app: web.Application) -> None:
    app.router.add_get("/server/auth/token", issue_token)
