"""Redis errors as the services see them: a Redis that cannot be reached is StoreUnavailable
(503 on both transports, "retry is safe"), logged once where it happens."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Iterator
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from livesignal.signal.model.errors import StoreUnavailable

log = logging.getLogger(__name__)

UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Turn "Redis cannot be reached" inside the block into StoreUnavailable."""
    try:
        yield
    except UNREACHABLE as exc:
        log.warning("redis unreachable: %s", exc)
        raise StoreUnavailable() from exc


async def guarded(awaitable: Awaitable[Any]) -> Any:
    """Await one Redis call (or pipeline), its unreachability as StoreUnavailable. (Any: the
    client's replies are untyped; callers read them as what they asked for.)"""
    with store_errors():
        return await awaitable
