"""Checks of the objects PROTOCOL §2-§4 define, written from the contract (field names,
JSON types), and small helpers the contract tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from livesignal.client import SignalClient
from tests.conftest import Harness
from tests.rest_helpers import (
    PAGE_FIELDS,
    RELAY_FIELDS,
    ROOM_FIELDS,
    USER_FIELDS,
    assert_ok,
    live_room,
)


def check_user(user: dict[str, Any]) -> None:
    assert set(user) == USER_FIELDS, user
    assert isinstance(user["im_userid"], int) and not isinstance(user["im_userid"], bool)
    for key in ("user_id", "im_username", "nick", "avatar"):
        assert isinstance(user[key], str), (key, user)
    assert isinstance(user["extends"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in user["extends"].items())


def check_room(room: dict[str, Any], *, ws_attach: bool = False, room_token: bool = False) -> None:
    """A room object; start and join replies add the caller's room_token (§3.2), socket
    attach replies add seq and relay (§4.3)."""
    expected = ROOM_FIELDS | ({"seq", "relay", "room_token"} if ws_attach else set())
    expected |= {"room_token"} if room_token else set()
    assert set(room) == expected, set(room) ^ expected
    for key in ("live_id", "title", "notice", "cover_url", "pk_id", "push_url"):
        assert isinstance(room[key], str), key
    for key in ("hls_url", "rtmp_url", "flv_url"):
        assert isinstance(room[key], str), key
    for key in (
        "anchor_status",
        "online_count",
        "start_time",
        "end_time",
        "chat_id",
        "pv",
        "uv",
        "live_status",
    ):
        value = room[key]
        assert isinstance(value, int) and not isinstance(value, bool), (key, value)
    assert room["anchor_status"] in (0, 1)
    assert room["live_status"] in (0, 1, 2)
    assert isinstance(room["extends"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in room["extends"].items())
    check_user(room["anchor_info"])
    if ws_attach:
        assert isinstance(room["seq"], int)
        assert room["relay"] is None or set(room["relay"]) == RELAY_FIELDS


def check_relay(relay: dict[str, Any]) -> None:
    assert set(relay) == RELAY_FIELDS, relay
    for key in ("sid", "init_user_id", "init_room_id", "recv_room_id", "recv_user_id"):
        assert isinstance(relay[key], str) and relay[key], key
    assert isinstance(relay["status"], int) and 0 <= relay["status"] <= 6
    for key in ("start_at", "stop_at"):
        value = relay[key]
        assert value == "" or time.strptime(value, "%Y-%m-%d %H:%M:%S"), (key, value)
    assert isinstance(relay["extends"], dict)
    assert relay["reason"] in ("", "rejected", "canceled", "timeout", "stopped", "room_ended")


def check_paged(data: dict[str, Any]) -> None:
    assert set(data) == PAGE_FIELDS, data
    assert isinstance(data["total_count"], int)
    assert isinstance(data["page_total"], int)
    assert isinstance(data["end_page"], bool)
    assert isinstance(data["list"], list)


Event = dict[str, Any]

# After the events a test waits for, how long any further (unexpected) event is given to show:
# the events of one step travel together, so a stray one comes with or right after them.
QUIET = 0.05


async def quiet_events(
    client: SignalClient,
    until: Callable[[list[Event]], bool] | None = None,
    *,
    timeout: float = 5.0,
) -> list[Event]:
    """The client's events: as many as it takes for `until(events)` to hold (each waited for,
    up to `timeout` in all), then every one more that arrives within QUIET."""
    loop = asyncio.get_running_loop()
    seen: list[Event] = []
    async with asyncio.timeout(timeout):
        while until is not None and not until(seen):
            seen.append(await client.next_event(timeout=timeout))
    deadline = loop.time() + QUIET
    while loop.time() < deadline:
        seen.extend(client.pending_events())
        await asyncio.sleep(0.01)
    seen.extend(client.pending_events())
    return seen


def count(n: int, name: str | None = None) -> Callable[[list[Event]], bool]:
    """`until` for quiet_events: n events (of that name) have arrived."""
    return lambda seen: sum(name is None or e["event"] == name for e in seen) >= n


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


async def start_relay(h: Harness, init: str, recv: str) -> tuple[str, str, str]:
    room_a, room_b = await live_room(h, init), await live_room(h, recv)
    body = {"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": recv}
    started = assert_ok(await h.call("POST", "/client/relay/start", init, json=body))
    return room_a, room_b, started["relay_id"]
