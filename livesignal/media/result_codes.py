"""Result codes of the media gateway (PROTOCOL §6) and the error that carries one."""

from __future__ import annotations

from enum import IntEnum


class ResultCode(IntEnum):
    SUCCESS = 10000
    BAD_TOKEN = 40001
    BAD_BODY = 40002
    NO_PROCESSOR = 41002
    INTERNAL = 50000


class GatewayError(Exception):
    """A request the gateway refuses; answered as HTTP 200 `{resultCode, message}`."""

    def __init__(self, code: ResultCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bad_body(message: str) -> GatewayError:
    return GatewayError(ResultCode.BAD_BODY, message)


def bad_token(message: str) -> GatewayError:
    return GatewayError(ResultCode.BAD_TOKEN, message)


SHUTTING_DOWN_MESSAGE = "the gateway is shutting down"


def shutting_down() -> GatewayError:
    """A request arriving while the gateway shuts down: 50000, but not a bug (no traceback)."""
    return GatewayError(ResultCode.INTERNAL, SHUTTING_DOWN_MESSAGE)


def shown(value: str, limit: int = 60) -> str:
    """`value` quoted for a reply or log line, cut short: messages never echo a whole body."""
    if len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)
