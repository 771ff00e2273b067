"""Typed keys for what the application object carries (aiohttp's web.AppKey)."""

from __future__ import annotations

from aiohttp import web

from livesignal.signal.services import Services
from livesignal.signal.ws_handshake import UpgradeTaker

SERVICES = web.AppKey("services", Services)
# Who takes over a connection whose request is a /ws upgrade (livesignal/http_server.py).
WS_UPGRADES = web.AppKey[UpgradeTaker]("ws_upgrades")
