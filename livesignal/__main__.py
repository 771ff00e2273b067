"""The `livesignal` command: `serve` runs the server, `token` prints a client token.

`serve` with server.workers = 1 is one process serving. With N > 1 this process becomes the
supervisor of N workers (livesignal/workers.py): each is `python -m livesignal` with the same
arguments, told by the environment that it is worker i of N, and serves on the shared port.

This is the only module that configures logging.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time

from livesignal.log_redaction import install_log_redaction
from livesignal.random_secrets import adopt_secrets, fill_random_secrets, secret_values
from livesignal.settings import Settings, SettingsError, check_workers, load_settings
from livesignal.signal.model.auth import ADMIN_ROLE, TokenCodec
from livesignal.workers import WorkerRole, stop_when_orphaned, take_worker_role

log = logging.getLogger("livesignal")

# The random secrets a supervisor made for its workers (JSON {name: value}), so that every
# worker signs and verifies with the same ones. Read (and removed) by the workers only.
SHARED_SECRETS_ENV = "LIVESIGNAL_SHARED_SECRETS"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# With several processes writing one log, each line says which one wrote it.
WORKERS_LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livesignal", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML config file (default: $LIVESIGNAL_CONFIG)")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument(
        "--workers",
        type=int,
        help="processes sharing the port (overrides server.workers; > 1 needs the redis store)",
    )
    token = commands.add_parser("token", help="print a client token for a user")
    token.add_argument("--user-id", required=True)
    token.add_argument("--config", help="TOML config file (default: $LIVESIGNAL_CONFIG)")
    token.add_argument("--ttl", type=int, help="seconds until it expires (default auth.token_ttl)")
    token.add_argument("--role", choices=[ADMIN_ROLE], help="'admin' may act as any anchor")
    return parser


async def _serve(settings: Settings, role: WorkerRole | None = None) -> None:
    # Imported late: `token` needs none of the server.
    from livesignal.app import create_app
    from livesignal.http.server import start_http_server

    app = create_app(settings)
    # Signals and the orphan watch come first: start-up may wait a long time for Redis.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    orphan_watch = None
    if role is not None:
        orphan_watch = asyncio.create_task(stop_when_orphaned(role, stop))
    starting = asyncio.create_task(start_http_server(app, settings, reuse_port=role is not None))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await starting
        log.info("stopped before serving")
        return
    try:
        runner = starting.result()
    except OSError as exc:
        stopping.cancel()
        raise SystemExit(
            f"livesignal: cannot listen on {settings.server.host}:"
            f"{settings.server.port}: {exc.strerror}"
        ) from exc
    name = "livesignal" if role is None else f"livesignal {role.label}"
    for host, port in sorted({(str(a[0]), int(a[1])) for a in runner.addresses}):
        log.info("%s listening on http://%s:%d", name, host, port)
    if settings.store.backend == "redis":
        from livesignal.http.server import open_node_listener
        from livesignal.media.http.mount import set_node_address

        address = await open_node_listener(runner, settings.server.host)
        set_node_address(app, address)
        log.info("node address for forwarded media requests: %s", address)
    await stopping
    if orphan_watch is not None:
        orphan_watch.cancel()
    log.info("shutting down: closing sockets, finishing in-flight requests")
    from livesignal.http.server import SHUTDOWN_GRACE

    try:
        # Bounded: with the store unreachable, the last releases and closes could each wait
        # out their own timeouts; the process still stops in time (PROTOCOL §1).
        await asyncio.wait_for(runner.cleanup(), SHUTDOWN_GRACE + 2.0)
    except TimeoutError:
        log.warning("shutdown took longer than %.0f s: stopping anyway", SHUTDOWN_GRACE + 2.0)


def _supervise(settings: Settings, argv: list[str]) -> int:
    """Run settings.server.workers workers of `livesignal <argv>` on the shared port."""
    from livesignal.http.server import SHUTDOWN_GRACE
    from livesignal.workers import Supervisor, check_port_shareable

    server = settings.server
    try:
        check_port_shareable(server.host, server.port)
    except OSError as exc:
        print(
            f"livesignal: cannot listen on {server.host}:{server.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    # On Redis every node adopts the cluster's secrets kept there (app.py); elsewhere the
    # supervisor makes them once for its workers.
    shared = fill_random_secrets(settings) if settings.store.backend != "redis" else []
    for secret in shared:
        log.warning(
            "%s is empty: the %d workers share a random one made for this run; what it signs "
            "is valid only until the server stops (set it in the config)",
            secret,
            server.workers,
        )
    env = {SHARED_SECRETS_ENV: json.dumps(secret_values(settings, shared))} if shared else {}
    log.info(
        "livesignal supervisor (pid %d): starting %d workers on http://%s:%d",
        os.getpid(),
        server.workers,
        server.host,
        server.port,
    )
    supervisor = Supervisor(
        [sys.executable, "-m", "livesignal", *argv],
        server.workers,
        env=env,
        # A worker's own shutdown takes up to the grace; past this margin it is stuck.
        stop_timeout=SHUTDOWN_GRACE + 5.0,
    )
    return asyncio.run(supervisor.run())


def _adopt_shared_secrets(settings: Settings) -> None:
    raw = os.environ.pop(SHARED_SECRETS_ENV, None)
    if raw is None:
        return
    try:
        given = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"{SHARED_SECRETS_ENV} is not JSON") from exc
    if not isinstance(given, dict):
        raise SettingsError(f"{SHARED_SECRETS_ENV} is not a JSON object")
    adopt_secrets(settings, given)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"livesignal: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        if not settings.auth.jwt_secret:
            print(
                "livesignal: no auth.jwt_secret configured: the server uses a random secret, "
                "so no token made here would be accepted. Set auth.jwt_secret in the config.",
                file=sys.stderr,
            )
            return 2
        if not args.user_id.strip():
            print("livesignal: --user-id must not be empty", file=sys.stderr)
            return 2
        codec = TokenCodec(settings.auth.jwt_secret, settings.auth.token_ttl)
        if args.ttl is not None and args.ttl <= 0:
            print("livesignal: --ttl must be positive", file=sys.stderr)
            return 2
        token, _ = codec.issue(args.user_id, time.time(), ttl=args.ttl, role=args.role or "")
        print(token)
        return 0
    try:
        role = take_worker_role(os.environ)
    except ValueError as exc:
        print(f"livesignal: {exc}", file=sys.stderr)
        return 2
    if args.host is not None:
        settings.server.host = args.host
    if args.port is not None:
        settings.server.port = args.port
    if args.workers is not None:
        settings.server.workers = args.workers
    try:
        settings.validate()  # the flags are checked like the file's keys
        check_workers(settings)
        if role is not None:
            _adopt_shared_secrets(settings)
    except SettingsError as exc:
        print(f"livesignal: {exc}", file=sys.stderr)
        return 2
    install_log_redaction()  # before the first record: no log line ever carries a token
    several = role is not None or settings.server.workers > 1
    logging.basicConfig(level=logging.INFO, format=WORKERS_LOG_FORMAT if several else LOG_FORMAT)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if role is None and settings.server.workers > 1:
        return _supervise(settings, sys.argv[1:] if argv is None else list(argv))
    try:
        asyncio.run(_serve(settings, role))
    except SettingsError as exc:
        print(f"livesignal: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
