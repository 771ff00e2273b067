"""The error codes of PROTOCOL §3.1, shared by REST and WebSocket replies."""

from __future__ import annotations


class ApiError(Exception):
    """An error the client is told about: envelope `code`, HTTP status and message."""

    code = 500
    http_status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class BadRequest(ApiError):
    code = 400
    http_status = 400
    default_message = "bad request"


class Unauthorized(ApiError):
    code = 401
    http_status = 401
    default_message = "invalid token"


class TokenExpired(ApiError):
    code = 499
    http_status = 401
    default_message = "token expired"


class Forbidden(ApiError):
    code = 403
    http_status = 403
    default_message = "forbidden"


class NotFound(ApiError):
    code = 404
    http_status = 404
    default_message = "not found"


class WrongState(ApiError):
    code = 601
    http_status = 409
    default_message = "the current state does not allow this"


class StoreUnavailable(ApiError):
    code = 503
    http_status = 503
    default_message = "backing store unreachable; the call did not complete, retry is safe"


class ShuttingDown(ApiError):
    """An upgrade that arrives while the server is closing its sockets."""

    code = 503
    http_status = 503
    default_message = "server shutting down: connect again (to another node)"


class RejoinRequired(ApiError):
    """compat.profile "original": a REST heartbeat of a user who is not (or no longer) a
    member. The original SDKs join the room again only when a heartbeat fails with HTTP 500."""

    code = 500
    http_status = 500
    default_message = "not in room: join again"


class TooManyRequests(ApiError):
    """A limit of PROTOCOL §7: a rate (with `retry_after` seconds) or a count (without)."""

    code = 429
    http_status = 429
    default_message = "too many requests"

    def __init__(self, message: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
