"""Secrets the config leaves empty are made up (PROTOCOL §1): per process, or per server.

No secret ships with the code: a default key would let anyone who read it sign pushes or RTC
tokens. A random one works within the process and dies with it; the supervisor of `serve
--workers N` hands its random secrets to its workers, and on Redis every node adopts the
cluster's (app.py), so that what one signs the others accept.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from livesignal.settings import Settings

# Secrets that, left empty, are made up for this process (a warning is logged for each).
RANDOM_WHEN_EMPTY = ("auth.jwt_secret", "stream.publish_key", "rtc.secret_key")


def fill_random_secrets(settings: Settings) -> list[str]:
    """Give every empty secret of RANDOM_WHEN_EMPTY a random value, in place; their names.

    No secret ships with the code: a default key would let anyone who read it sign pushes or
    RTC tokens. A random one works within this process and dies with it.
    """
    filled = []
    for name in RANDOM_WHEN_EMPTY:
        section_name, key = name.split(".")
        section = getattr(settings, section_name)
        if not getattr(section, key):
            setattr(section, key, secrets.token_urlsafe(48))
            filled.append(name)
    return filled


def secret_values(settings: Settings, names: list[str]) -> dict[str, str]:
    """The values of the named secrets (dotted names, as in RANDOM_WHEN_EMPTY)."""
    values = {}
    for name in names:
        section_name, key = name.split(".")
        values[name] = str(getattr(getattr(settings, section_name), key))
    return values


def adopt_secrets(settings: Settings, given: Mapping[str, str]) -> None:
    """Give each empty secret of RANDOM_WHEN_EMPTY its value in `given`, in place.

    How the workers of one server share the random secrets their supervisor made: a token
    or a signed URL one worker issues is accepted by every other.
    """
    for name, value in given.items():
        if name not in RANDOM_WHEN_EMPTY or not isinstance(value, str) or not value:
            continue
        section_name, key = name.split(".")
        section = getattr(settings, section_name)
        if not getattr(section, key):
            setattr(section, key, value)
