"""Typed access to an operation's parameters (path, query and body merged, or a frame's data).

Every failure is a BadRequest naming the field, so both transports report bad input alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from livesignal.signal.model.clock import parse_china_time
from livesignal.signal.model.errors import BadRequest

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# At most 18 digits: fits a signed 64-bit integer, which is what JSON replies can carry.
_INTEGER = re.compile(r"-?[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Page:
    num: int
    size: int


class Params:
    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __contains__(self, name: str) -> bool:
        return self._data.get(name) is not None

    def raw(self, name: str) -> Any:
        return self._data.get(name)

    def text(self, name: str, *, max_len: int | None = None) -> str:
        """A required non-empty string."""
        value = self._data.get(name)
        if value is None or value == "":
            raise BadRequest(f"{name} is required")
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a string")
        if max_len is not None and len(value) > max_len:
            raise BadRequest(f"{name} must be at most {max_len} characters")
        return value

    def opt_text(self, name: str, *, max_len: int | None = None) -> str | None:
        value = self._data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be a string")
        if max_len is not None and len(value) > max_len:
            raise BadRequest(f"{name} must be at most {max_len} characters")
        return value

    def opt_str_map(self, name: str) -> dict[str, str] | None:
        value = self._data.get(name)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise BadRequest(f"{name} must be an object of string values")
        return dict(value)

    def str_map(self, name: str) -> dict[str, str]:
        value = self.opt_str_map(name)
        if value is None:
            raise BadRequest(f"{name} is required")
        return value

    def opt_int(self, name: str) -> int | None:
        """An integer given as a JSON number or, from a query string, as digits."""
        value = self._data.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise BadRequest(f"{name} must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            text = value.strip()
            # ASCII digits only: str.isdigit() also admits "²" or "--5", which int() refuses.
            # Longer numbers are refused too: they could not be put back into a reply.
            if _INTEGER.fullmatch(text):
                return int(text)
        raise BadRequest(f"{name} must be an integer")

    def opt_time(self, name: str) -> int | None:
        """A time as 'YYYY-MM-DD HH:MM:SS' (UTC+8) or integer unix seconds."""
        value = self._data.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise BadRequest(f"{name} must not be negative")
            return value
        if isinstance(value, str):
            try:
                parsed = parse_china_time(value.strip())
            except ValueError:
                pass
            else:
                if parsed >= 0:
                    return parsed
        raise BadRequest(f"{name} must be 'YYYY-MM-DD HH:MM:SS' or unix seconds")

    def page(self) -> Page:
        num = self.opt_int("page_num")
        size = self.opt_int("page_size")
        num = 1 if num is None else num
        size = DEFAULT_PAGE_SIZE if size is None else size
        if num < 1:
            raise BadRequest("page_num must be >= 1")
        if size < 1:
            raise BadRequest("page_size must be >= 1")
        return Page(num=num, size=min(size, MAX_PAGE_SIZE))


def paged(items: list[Any], page: Page) -> dict[str, Any]:
    """The paging envelope of PROTOCOL §3.2 around one page of `items`."""
    total = len(items)
    page_total = -(-total // page.size)
    start = (page.num - 1) * page.size
    return {
        "total_count": total,
        "page_total": page_total,
        "end_page": page.num >= page_total,
        "list": items[start : start + page.size],
    }
