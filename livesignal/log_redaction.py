"""Tokens never reach a log line (PROTOCOL §2), whichever component logs them.

`install_log_redaction()` wraps the process's LogRecord factory: every record that passes its
logger's level is formatted once (msg % args, and the exception text of exc_info) and any
token in it is replaced by `<redacted>` before a handler, filter or formatter sees it. The
factory only runs for records that are emitted, so a silenced logger costs nothing.

What counts as a token:
- a client JWT: three base64url segments, the first starting with `eyJ` (a JSON header);
- an RTC room token `<access_key>:<sign>:<enc>`, enc being base64 JSON (starts `eyJ`);
- the value of any `token=` query parameter (any case; `access_token=`, `room_token=` too);
- the value of an `Authorization` header, as `Authorization: v`, `"Authorization": "v"` or
  `authorization=v`.
"""

from __future__ import annotations

import logging
import re
import string
import threading
from typing import Any

REDACTED = "<redacted>"

# Base64 JSON (a JWT header, an RTC token's enc) and up to two more dot-separated segments
# (a JWT's payload and signature). It starts with a literal, so scanning stays linear.
_B64_JSON = re.compile(r"eyJ[A-Za-z0-9_\-+/=%]*(?:\.[A-Za-z0-9_\-+/=%]*){0,2}")
# A value already redacted (it starts with '<') is left alone.
_QUERY_TOKEN = re.compile(r"(?i)(token=)[^\s&#;,\"'<>]+")
_AUTHORIZATION = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?=[^\s<\"'])[^\r\n\"']+")

# An RTC token's `<access_key>:<sign>:` in front of its enc; ':' may be percent-encoded.
_SIGN_CHARS = frozenset(string.ascii_letters + string.digits + "-_+/=")
_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-_.~")
_MAX_SIGN = 64  # base64 of an HMAC-SHA1 is 28 characters; room for other digests
_MAX_KEY = 128


def redact(text: str) -> str:
    """`text` with every token replaced by `<redacted>`."""
    if "eyJ" in text:
        text = _redact_b64_json(text)
    lowered = text.lower()
    if "token=" in lowered:
        text = _QUERY_TOKEN.sub(r"\1" + REDACTED, text)
        # `token=ak%3Asign%3AeyJ..`: the enc went first, then what was left of the value.
        text = text.replace(REDACTED + REDACTED, REDACTED)
    if "authorization" in lowered:
        text = _AUTHORIZATION.sub(r"\1" + REDACTED, text)
    return text


def _redact_b64_json(text: str) -> str:
    pieces: list[str] = []
    done = 0
    for match in _B64_JSON.finditer(text):
        start = _rtc_prefix_start(text, match.start(), done)
        pieces.append(text[done:start])
        pieces.append(REDACTED)
        done = match.end()
    pieces.append(text[done:])
    return "".join(pieces)


def _rtc_prefix_start(text: str, start: int, floor: int) -> int:
    """Where `<access_key>:<sign>:` ends at `start` begins (`start` itself if it does not).

    Scanned backwards by hand, each run bounded: a regex with an unanchored prefix would
    backtrack quadratically over a long line.
    """
    colon = _separator_before(text, start, floor)
    if colon < 0:
        return start
    sign = _run_before(text, colon, _SIGN_CHARS, max(floor, colon - _MAX_SIGN))
    if sign == colon:
        return start
    colon = _separator_before(text, sign, floor)
    if colon < 0:
        return sign
    return _run_before(text, colon, _KEY_CHARS, max(floor, colon - _MAX_KEY))


def _separator_before(text: str, end: int, floor: int) -> int:
    """The index of a ':' (or '%3A') that ends at `end`, else -1."""
    if end - 1 >= floor and text[end - 1] == ":":
        return end - 1
    if end - 3 >= floor and text[end - 3 : end] in ("%3A", "%3a"):
        return end - 3
    return -1


def _run_before(text: str, end: int, chars: frozenset[str], floor: int) -> int:
    start = end
    while start > floor and text[start - 1] in chars:
        start -= 1
    return start


# --- the LogRecord factory --------------------------------------------------------------------

_exception_formatter = logging.Formatter()
_install_lock = threading.Lock()


def redact_record(record: logging.LogRecord) -> None:
    """Format `record`'s message and exception text once, redacted, in place.

    The exception is kept only as text (exc_info is cleared), so no handler or formatter can
    render the original, unredacted exception message again.
    """
    try:
        message = record.getMessage()
    except Exception:  # a broken log call; logging would report it with its raw args
        message = f"{record.msg} (arguments could not be formatted)"
    record.msg = redact(message)
    record.args = None
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = _exception_formatter.formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class _RedactingRecordFactory:
    """Wraps the factory that was installed before it; see redact_record."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        redact_record(record)
        return record


def install_log_redaction() -> None:
    """Redact tokens from every log record of this process from now on (idempotent)."""
    with _install_lock:
        current = logging.getLogRecordFactory()
        if not isinstance(current, _RedactingRecordFactory):
            logging.setLogRecordFactory(_RedactingRecordFactory(current))
