"""Builds the aiohttp application: settings → store/broker → services → routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web

from livesignal.http.appkeys import SERVICES, WS_UPGRADES
from livesignal.http.cors import cors_middleware
from livesignal.http.metrics import add_metrics_route
from livesignal.http.probes import add_health_routes
from livesignal.http.upgrade import UpgradeRequest, UpgradeTaker
from livesignal.http_compat.client_routes import add_rest_routes, rest_errors
from livesignal.http_compat.server_routes import add_server_routes
from livesignal.log_redaction import install_log_redaction
from livesignal.media.http.mount import (
    GATEWAY_KEY,
    PlacementFactory,
    add_media_routes,
    node_listener_guard,
)
from livesignal.media.placement import LocalPlacement
from livesignal.random_secrets import fill_random_secrets
from livesignal.settings import Settings
from livesignal.signal.backends.base import Backend
from livesignal.signal.backends.build import build_backend
from livesignal.signal.model.auth import RtcTokenCodec, StreamUrls, TokenCodec
from livesignal.signal.model.clock import Clock
from livesignal.signal.model.errors import StoreUnavailable
from livesignal.signal.services.context import ServiceContext
from livesignal.signal.services.sweeper import sweep_interval
from livesignal.signal.services.wiring import Services, build_services
from livesignal.signal.ws.hub import SocketHub

log = logging.getLogger(__name__)

# Requests are bounded per route (64 KiB JSON bodies); this only caps what aiohttp buffers.
CLIENT_MAX_SIZE = 1024 * 1024


_RANDOM_SECRET_WARNINGS = {
    "auth.jwt_secret": "client tokens will not survive a restart and `livesignal token` "
    "cannot issue tokens for this server",
    "stream.publish_key": "signed push URLs are valid only until this process stops",
    "rtc.secret_key": "RTC room tokens (relay_token, the gateway's Token) are valid only "
    "until this process stops",
}


def use_random_secrets_where_empty(settings: Settings) -> list[str]:
    """Fill empty secrets in place with random ones, warning for each (never logging them).

    With the Redis backend these are placeholders: before serving, every node adopts the
    cluster's random secret kept in Redis (`_adopt_cluster_secrets`), so that what one node
    signs every other accepts.
    """
    filled = fill_random_secrets(settings)
    if settings.store.backend == "redis":
        return filled
    for name in filled:
        log.warning(
            "%s is empty: using a random per-process secret; %s",
            name,
            _RANDOM_SECRET_WARNINGS[name],
        )
    return filled


async def _adopt_cluster_secrets(backend: Backend, settings: Settings, names: list[str]) -> None:
    """Secrets left empty are shared by the cluster: the first node makes each (SET NX)."""
    for name in names:
        section_name, key = name.split(".")
        section = getattr(settings, section_name)
        setattr(section, key, await backend.share_secret(name, getattr(section, key)))
        log.warning(
            "%s is empty: using the cluster's random secret kept in Redis; set it in the "
            "config to keep what it signs valid if Redis loses its data",
            name,
        )


def build_context(settings: Settings, backend: Backend) -> ServiceContext:
    return ServiceContext(
        settings=settings,
        clock=backend.clock,
        store=backend.store,
        broker=backend.broker,
        tokens=TokenCodec(settings.auth.jwt_secret, settings.auth.token_ttl),
        rtc_tokens=RtcTokenCodec(settings.rtc),
        urls=StreamUrls(settings.stream, settings.rtc),
        node_id=secrets.token_hex(8),
    )


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    run_sweeper: bool = True,
) -> web.Application:
    """The whole server on one aiohttp app. `run_sweeper=False` leaves timers to the caller."""
    install_log_redaction()  # idempotent; also covers servers not started by `livesignal serve`
    backend = build_backend(settings.store.backend, settings.store.redis_url, clock)
    filled = use_random_secrets_where_empty(settings)
    ctx = build_context(settings, backend)
    services = build_services(ctx)
    # CORS outermost; the node listener's guard before anything answers.
    middlewares = [
        node_listener_guard,
        cors_middleware(settings.server.cors_origins),
        rest_errors,
    ]
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=middlewares)
    app[SERVICES] = services
    shared_secrets = filled if backend.redis is not None else []
    app.cleanup_ctx.append(_backend_lifetime(backend, settings, ctx, shared_secrets))
    hub = SocketHub(services)
    app.router.add_get("/ws", hub.handle)
    app[WS_UPGRADES] = _upgrades_taken_by(hub, app)
    add_health_routes(app)
    add_metrics_route(app, hub.metrics, hub.gauges)
    app.cleanup_ctx.append(_background(hub.run, "livesignal-socket-hub"))
    app.on_shutdown.append(lambda _app: hub.close_all())
    add_rest_routes(app)
    add_server_routes(app)
    add_media_routes(
        app,
        settings,
        ctx.clock,
        _media_placement(backend, ctx.node_id),
        events=services.media_events,
    )
    if run_sweeper:
        app.cleanup_ctx.append(_sweeping(services, sweep_interval(settings)))
    return app


def _upgrades_taken_by(hub: SocketHub, app: web.Application) -> UpgradeTaker:
    """/ws upgrades on the public port go to the hub; the node listener takes none."""

    def take(transport: asyncio.Transport, request: UpgradeRequest, early: bytes) -> bool:
        node_port = app[GATEWAY_KEY].node_port
        sockname = transport.get_extra_info("sockname")
        if node_port is not None and isinstance(sockname, tuple) and sockname[1] == node_port:
            return False  # aiohttp answers it (404: the node listener serves no client)
        hub.take_upgrade(transport, request, early)
        return True

    return take


MEDIA_PIN_LEASE = 10.0  # seconds a dead node keeps its rooms' media pinned


def _media_placement(backend: Backend, node_id: str) -> PlacementFactory:
    if backend.redis is None:
        return lambda _has_media: LocalPlacement()
    from livesignal.signal.backends.redis.placement import RedisPlacement

    client = backend.redis
    return lambda has_media: RedisPlacement(client, node_id, MEDIA_PIN_LEASE, has_media)


def _backend_lifetime(
    backend: Backend, settings: Settings, ctx: ServiceContext, shared_secrets: list[str]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Wait for the backend before serving (Redis may come up later); close it at the end."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        await backend.start()
        if shared_secrets:
            await _adopt_cluster_secrets(backend, settings, shared_secrets)
            ctx.tokens.rekey(settings.auth.jwt_secret)
        tasks = [asyncio.create_task(run()) for run in backend.background]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await backend.close()

    return context


def _sweeping(
    services: Services, interval: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The node's lease is written before it serves (a node killed in its first moments must
    still lose its members), then the sweeper runs for as long as the app serves."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        with contextlib.suppress(StoreUnavailable, ConnectionError, TimeoutError, OSError):
            await services.sweeper.renew_lease()
        async for _ in _background(lambda: services.sweeper.run(interval), "livesignal-sweeper")(
            app
        ):
            yield

    return context


def _background(
    run: Callable[[], Coroutine[Any, Any, None]], name: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A task that lives as long as the application serves."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name=name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context
