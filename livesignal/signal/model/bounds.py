"""Sizes of what a client can store or relay (PROTOCOL §7), checked once, in the services.

Every value that ends up in a stored record or in an event is bounded here, so no event can
grow large enough to close another member's socket, whichever transport or backend carried it.
"""

from __future__ import annotations

import orjson

from livesignal.signal.model.errors import BadRequest

MAX_NICK_CHARS = 64
MAX_AVATAR_CHARS = 1024
MAX_NOTICE_CHARS = 1024
MAX_COVER_URL_CHARS = 1024
MAX_CHAT_BYTES = 4 * 1024
MAX_REJECT_REASON_CHARS = 1024  # reaches the initiator as relay.rejected `message`


def check_chars(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise BadRequest(f"{name} must be at most {limit} characters")


def check_extends(name: str, extends: dict[str, str] | None, limit: int) -> None:
    """An extends map as compact JSON (UTF-8) is at most `limit` bytes; 0 = no limit."""
    if not extends or not limit:
        return
    size = len(orjson.dumps(extends))
    if size > limit:
        raise BadRequest(f"{name} must be at most {limit} bytes as compact JSON, got {size}")


def merge_extends(
    name: str, current: dict[str, str], update: dict[str, str], limit: int
) -> dict[str, str]:
    """`current` with `update` merged in; BadRequest (nothing changed) if that outgrows limit."""
    merged = {**current, **update}
    check_extends(name, merged, limit)
    return merged


def check_chat_text(text: str) -> None:
    if len(text.encode()) > MAX_CHAT_BYTES:
        raise BadRequest(f"text must be at most {MAX_CHAT_BYTES} bytes of UTF-8")
