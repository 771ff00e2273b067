"""A small asyncio client for livesignal's `/ws`, on the `websockets` library.

    client = await SignalClient.connect("ws://127.0.0.1:8080/ws", token)
    room = await client.request("room.join", live_id="live_1")
    async for event in client.events():
        print(event["event"], event.get("data"))

Pings are answered by the library (the server's heartbeat is implicit). The client remembers
the room it is attached to and the last seq it saw there, so `reconnect()` (or
`auto_reconnect=True`) opens a new socket and resumes without losing room events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)

ATTACHING_OPS = {"room.join", "room.start", "room.resume"}


class SignalError(Exception):
    """The server answered a request with a non-zero code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(Exception):
    """The socket closed before a reply arrived."""

    def __init__(self, close_code: int | None) -> None:
        super().__init__(f"connection closed (code {close_code})")
        self.close_code = close_code


_CLOSED = object()  # sentinel in the event queue: the socket closed


class SignalClient:
    def __init__(self, url: str, token: str, *, auto_reconnect: bool = False) -> None:
        self.url = url
        self.token = token
        self.auto_reconnect = auto_reconnect
        self.welcome: dict[str, Any] = {}
        self.live_id: str | None = None  # the room this client is attached to
        self.last_seq: dict[str, int] = {}
        self.close_code: int | None = None
        self.last_resume: dict[str, Any] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int | str, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._welcomed: asyncio.Future[dict[str, Any]] | None = None
        self._closing = False

    @classmethod
    async def connect(cls, url: str, token: str, *, auto_reconnect: bool = False) -> SignalClient:
        client = cls(url, token, auto_reconnect=auto_reconnect)
        await client._open()
        return client

    async def _open(self) -> None:
        self.close_code = None
        self._ws = await connect(
            self.url,
            additional_headers={"Authorization": self.token},
            compression=None,
            ping_interval=None,  # the server pings; the library answers
            max_size=None,
        )
        self._welcomed = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(self._ws))
        self.welcome = await asyncio.wait_for(asyncio.shield(self._welcomed), 10)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._on_frame(orjson.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionLost(self.close_code))
            self._pending.clear()
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_exception(ConnectionLost(self.close_code))
            if self.auto_reconnect and not self._closing:
                asyncio.get_running_loop().create_task(self._reconnect_forever())
            else:
                self._events.put_nowait(_CLOSED)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "reply":
            future = self._pending.pop(frame.get("id"), None)  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(frame)
        elif kind == "event":
            live_id = frame.get("live_id")
            if live_id is not None and isinstance(frame.get("seq"), int):
                self.last_seq[live_id] = frame["seq"]
            self._events.put_nowait(frame)
        elif kind == "welcome":
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_result(frame["data"])

    async def request(self, op: str, **data: Any) -> Any:
        """Send one operation and return its reply's data; SignalError for a non-zero code."""
        if self._ws is None:
            raise ConnectionLost(self.close_code)
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send(orjson.dumps({"id": request_id, "type": op, "data": data}).decode())
        except ConnectionClosed as exc:
            self._pending.pop(request_id, None)
            raise ConnectionLost(self.close_code) from exc
        reply = await future
        if reply["code"] != 0:
            raise SignalError(reply["code"], reply["message"])
        result = reply["data"]
        if op in ATTACHING_OPS and "live_id" in data:
            self.live_id = data["live_id"]
            if isinstance(result, dict) and isinstance(result.get("seq"), int):
                seen = self.last_seq.get(self.live_id, 0)
                self.last_seq[self.live_id] = max(seen, result["seq"])
        elif op == "room.leave" and data.get("live_id") == self.live_id:
            self.live_id = None
        return result

    async def send_raw(self, frame: str | bytes) -> None:
        """Send a frame as is (for tests of the server's input checks)."""
        assert self._ws is not None
        await self._ws.send(frame)

    async def next_event(self, name: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The next event (of that name, skipping others); TimeoutError if none comes."""
        async with asyncio.timeout(timeout):
            while True:
                item = await self._events.get()
                if item is _CLOSED:
                    self._events.put_nowait(_CLOSED)
                    raise ConnectionLost(self.close_code)
                if name is None or item.get("event") == name:
                    return dict(item)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event until the socket closes."""
        while True:
            item = await self._events.get()
            if item is _CLOSED:
                self._events.put_nowait(_CLOSED)
                return
            yield item

    def pending_events(self) -> list[dict[str, Any]]:
        """Events received and not yet consumed, without waiting."""
        drained = []
        while not self._events.empty():
            item = self._events.get_nowait()
            if item is _CLOSED:
                self._events.put_nowait(_CLOSED)
                break
            drained.append(item)
        return drained

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close the socket; its close code."""
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def reconnect(self) -> dict[str, Any] | None:
        """Open a new socket and resume the attached room; the resume reply, if any."""
        if self._ws is not None:
            await self._ws.close()
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    await self._reader
        # The old reader posted a close marker; the new socket continues the same stream.
        kept = [item for item in self.pending_events()]
        while not self._events.empty():
            self._events.get_nowait()
        for item in kept:
            self._events.put_nowait(item)
        await self._open()
        if self.live_id is None:
            return None
        since = self.last_seq.get(self.live_id, 0)
        self.last_resume = await self.request("room.resume", live_id=self.live_id, since=since)
        return self.last_resume

    async def _reconnect_forever(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                await self.reconnect()
                return
            except (OSError, ConnectionLost, SignalError, TimeoutError) as exc:
                log.info("reconnect failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
