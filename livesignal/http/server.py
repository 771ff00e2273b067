"""The HTTP server of `livesignal serve`: aiohttp's runner and site, made to keep PROTOCOL §7.

- `limits.header_timeout`: a connection that has not sent a whole request head within that
  long of connecting (or, when kept alive, of the first byte of its next request) is closed.
- `limits.idle_timeout`: a kept-alive connection idle that long is closed (aiohttp's own
  keep-alive timer). A WebSocket after its upgrade is subject to neither: the signalling
  layer pings it.
- A request aiohttp's parser rejects is answered 400 in the JSON envelope (PROTOCOL §3.1)
  with a message that quotes none of the client's bytes, and logged as one line, no traceback.
- The access log never shows a token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from livesignal.http.appkeys import WS_UPGRADES
from livesignal.http.envelope import plain_failure, request_id_of
from livesignal.http.upgrade import MAX_HEAD, UpgradeTaker, might_be_upgrade, parse_upgrade
from livesignal.log_redaction import redact
from livesignal.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0  # PROTOCOL §1: in-flight requests get this long on SIGINT/SIGTERM

# What a rejected request is told (and the log says): a kind of error, never its bytes. The
# parser's own messages quote the offending line, which may hold a token. First match wins.
_PARSER_ERRORS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (LineTooLong, "request line or header too long"),
    (BadHttpMethod, "bad method (or not HTTP at all)"),
    (BadStatusLine, "malformed request line"),
    (InvalidURLError, "invalid URL"),
    (InvalidHeader, "invalid header"),
    (PayloadEncodingError, "malformed body framing"),
)


def describe_parser_error(exc: HttpProcessingError) -> str:
    for kind, text in _PARSER_ERRORS:
        if isinstance(exc, kind):
            return text
    return "malformed request"


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request; tokens in the query never reach the log."""

    @property
    def enabled(self) -> bool:
        # Checked by aiohttp before building the entry: a silenced access log costs nothing.
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %.1fms',
            request.remote,
            request.method,
            redact(request.path_qs),
            response.status,
            time * 1000,
        )


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's HTTP/1 protocol plus the header timeout and enveloped parser errors.

    At most one timer per connection, armed only while a request head is incomplete: at
    connect, and when the first bytes of a kept-alive connection's next request arrive
    without a whole head (a head that comes in one read arms nothing). It stops when a head
    (or a parse error) has been parsed; bodies and upgraded WebSockets never see it. A partial
    head that arrives behind a complete one, in the same read, with nothing after it, is left
    to idle_timeout (aiohttp's keep-alive timer closes a connection waiting for a request).

    With `take_upgrade` (the app's WS_UPGRADES), a request head that may be `GET /ws` is held
    back from aiohttp until it is whole; a WebSocket upgrade is then handed over, transport
    and all, to the WebSocket layer (signal/ws/link.py), and aiohttp lets go of the
    connection as it does when a peer disconnects (with the transport detached first, so that
    it stays open). Anything else is fed to aiohttp as it arrived.

    Reads two attributes of RequestHandler, its only private parts used here: `_waiter` (set
    while start() is parked waiting for the next request) and `_request_count` (messages
    parsed so far, parse errors included).
    """

    __slots__ = ("_header_timeout", "_head_timer", "_take_upgrade", "_sniffed", "_fed")

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: float,
        take_upgrade: UpgradeTaker | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._take_upgrade = take_upgrade
        self._sniffed: bytearray | None = None  # a request head that may be a /ws upgrade
        self._fed = False  # whether aiohttp's parser has seen any byte yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._header_timeout > 0:
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._take_upgrade is not None:
            sniffed = self._sniffed
            if sniffed is not None:
                sniffed += data
                self._sniff()
                return
            if self._at_request_start() and might_be_upgrade(data):
                # The head of a new request that may be `GET /ws`: held back from aiohttp
                # until it is whole (under the same header timeout) and can be decided.
                self._sniffed = bytearray(data)
                if self._head_timer is None and self._header_timeout > 0:
                    self._head_timer = self._loop.call_later(
                        self._header_timeout, self._head_timed_out
                    )
                self._sniff()
                return
        self._feed(data)

    def _at_request_start(self) -> bool:
        """Whether the next byte begins a request (none of it has reached aiohttp)."""
        if not self._fed:
            return True
        waiter = self._waiter
        return waiter is not None and not waiter.done() and self._head_timer is None

    def _sniff(self) -> None:
        sniffed = self._sniffed
        assert sniffed is not None and self._take_upgrade is not None
        end = sniffed.find(b"\r\n\r\n")
        if end < 0 or end + 4 > MAX_HEAD:
            # A head over MAX_HEAD, even one that came whole in a single read, goes to aiohttp
            # and its limits on lines and headers (a 400), as every other request does.
            if len(sniffed) > MAX_HEAD or not might_be_upgrade(bytes(sniffed[:8])):
                self._release()
            return
        request = parse_upgrade(bytes(sniffed[: end + 4]))
        transport = self.transport
        if request is None or not isinstance(transport, asyncio.Transport):
            self._release()
            return
        if not self._take_upgrade(transport, request, bytes(sniffed[end + 4 :])):
            self._release()
            return
        # The socket is served by the WebSocket layer from now on. aiohttp's side of this
        # connection ends the way it does when a peer disconnects, with the transport
        # detached first so that its teardown leaves the socket open.
        self._sniffed = None
        self.transport = None
        self.connection_lost(None)

    def _release(self) -> None:
        """Not an upgrade the WebSocket layer takes: aiohttp serves it as any request."""
        sniffed, self._sniffed = self._sniffed, None
        if sniffed:
            self._feed(bytes(sniffed))

    def _feed(self, data: bytes) -> None:
        self._fed = True
        timer = self._head_timer
        if timer is None:
            waiter = self._waiter
            if waiter is None or waiter.done() or self._header_timeout <= 0:
                # A body is arriving, a WebSocket after its upgrade, or the timeout is off.
                # (The base method is named, not super(): no proxy object on every read.)
                web.RequestHandler.data_received(self, data)
                return
        parsed = self._request_count
        web.RequestHandler.data_received(self, data)
        if self._request_count != parsed:
            # A whole head (or a parse error, answered 400 and closed): the clock stops.
            if timer is not None:
                timer.cancel()
                self._head_timer = None
        elif timer is None and data and self.transport is not None:
            # The first bytes of the next request on an idle kept-alive connection.
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is not None:
            log.debug(
                "closing a connection that sent no request head within %.1fs", self._header_timeout
            )
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """The error answer in the JSON envelope; aiohttp's `message` (client bytes) unused."""
        if isinstance(exc, HttpProcessingError):
            reason = describe_parser_error(exc)
            # Non-HTTP traffic (TLS probes, scanners) is internet noise: debug, as aiohttp does.
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
            log.log(level, "rejected a malformed HTTP request from %s: %s", request.remote, reason)
            text = f"bad request: {reason}"
        else:
            # A handler outside the REST middleware failed (or timed out): a bug, with its
            # traceback (redacted like every log record).
            log.error(
                "error handling %s %s: HTTP %d", request.method, request.path, status, exc_info=exc
            )
            text = HTTPStatus(status).phrase.lower()
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started; cannot send an error")
        # Application's request factory makes web.Request; request_id_of reads its headers
        # (none for an unparsable request: a fresh id).
        response = plain_failure(request_id_of(cast(web.Request, request)), status, text)
        response.force_close()
        return response


class _GuardedServer(web.Server):
    """aiohttp's low-level server, making GuardedRequestHandler protocols."""

    def __init__(
        self,
        plain: web.Server,
        header_timeout: float,
        take_upgrade: UpgradeTaker | None,
        **handler_kwargs: Any,
    ) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **handler_kwargs,
        )
        self._guard_loop = asyncio.get_running_loop()
        self._header_timeout = header_timeout
        self._take_upgrade = take_upgrade
        self._handler_kwargs = handler_kwargs

    def __call__(self) -> web.RequestHandler:
        return GuardedRequestHandler(
            self,
            loop=self._guard_loop,
            header_timeout=self._header_timeout,
            take_upgrade=self._take_upgrade,
            **self._handler_kwargs,
        )


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose connections are GuardedRequestHandlers.

    The seam: aiohttp's sites call `runner.server` to make each connection's protocol, and
    `Server.__call__` hard-codes RequestHandler. Application._make_handler (which builds that
    Server) and Server's internals are private; BaseRunner._make_server is the one factory
    hook a runner subclass is meant to provide (AppRunner and ServerRunner both do). So we
    let AppRunner do its part (start the app, build its Server), then wrap the Server's public
    request_handler/request_factory in our own Server subclass, whose `__call__` is ours.
    """

    __slots__ = ("_header_timeout", "_handler_kwargs")

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        idle_timeout: float,
        shutdown_timeout: float = SHUTDOWN_GRACE,
    ) -> None:
        self._header_timeout = header_timeout
        self._handler_kwargs: dict[str, Any] = {
            "access_log_class": RedactingAccessLogger,
            # aiohttp's 0 would mean "close right after each response"; ours means no limit.
            "keepalive_timeout": idle_timeout if idle_timeout > 0 else math.inf,
        }
        super().__init__(
            app, handle_signals=False, shutdown_timeout=shutdown_timeout, **self._handler_kwargs
        )

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        take_upgrade = self.app.get(WS_UPGRADES)
        return _GuardedServer(plain, self._header_timeout, take_upgrade, **self._handler_kwargs)


async def start_http_server(
    app: web.Application, settings: Settings, *, reuse_port: bool = False
) -> web.AppRunner:
    """Start `app` listening on server.host:server.port; OSError (cleaned up) if it cannot.

    `reuse_port`: bind with SO_REUSEPORT, sharing the port with the other workers of
    `livesignal serve --workers N` (livesignal/workers.py).
    """
    runner = GuardedAppRunner(
        app,
        header_timeout=settings.limits.header_timeout,
        idle_timeout=settings.limits.idle_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port, reuse_port=reuse_port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


WILDCARD_HOSTS = ("", "0.0.0.0", "::")


async def open_node_listener(runner: web.AppRunner, host: str) -> str:
    """A second listener on a port of this process alone: "host:port" for other nodes.

    With `--workers N` the shared port reaches any worker; requests one node forwards to
    another (a room's media lives on one node) must reach exactly that process.
    """
    bind = "0.0.0.0" if host in WILDCARD_HOSTS else host
    before = {tuple(address[:2]) for address in runner.addresses}
    site = web.TCPSite(runner, bind, 0)
    await site.start()
    added = [tuple(a[:2]) for a in runner.addresses if tuple(a[:2]) not in before]
    port = int(added[0][1])
    advertised = socket.gethostbyname(socket.gethostname()) if host in WILDCARD_HOSTS else host
    if ":" in advertised:
        advertised = f"[{advertised}]"
    return f"{advertised}:{port}"
