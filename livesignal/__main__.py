"""The `livesignal` command: `serve` runs the server, `token` prints a client token.

This is the only module that configures logging.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from livesignal.log_redaction import install_log_redaction
from livesignal.settings import Settings, SettingsError, load_settings
from livesignal.signal.auth import ADMIN_ROLE, TokenCodec

log = logging.getLogger("livesignal")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livesignal", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML config file (default: $LIVESIGNAL_CONFIG)")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    token = commands.add_parser("token", help="print a client token for a user")
    token.add_argument("--user-id", required=True)
    token.add_argument("--config", help="TOML config file (default: $LIVESIGNAL_CONFIG)")
    token.add_argument("--ttl", type=int, help="seconds until it expires (default auth.token_ttl)")
    token.add_argument("--role", choices=[ADMIN_ROLE], help="'admin' may act as any anchor")
    return parser


async def _serve(settings: Settings) -> None:
    # Imported late: `token` needs none of the server.
    from livesignal.app import create_app
    from livesignal.http_server import start_http_server

    app = create_app(settings)
    try:
        runner = await start_http_server(app, settings)
    except OSError as exc:
        raise SystemExit(
            f"livesignal: cannot listen on {settings.server.host}:"
            f"{settings.server.port}: {exc.strerror}"
        ) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    for host, port in sorted({(str(a[0]), int(a[1])) for a in runner.addresses}):
        log.info("livesignal listening on http://%s:%d", host, port)
    await stop.wait()
    log.info("shutting down: closing sockets, finishing in-flight requests")
    await runner.cleanup()


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
    if args.host is not None:
        settings.server.host = args.host
    if args.port is not None:
        settings.server.port = args.port
    install_log_redaction()  # before the first record: no log line ever carries a token
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        asyncio.run(_serve(settings))
    except SettingsError as exc:
        print(f"livesignal: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
