"""Typed keys for what the application object carries (aiohttp's web.AppKey)."""

from __future__ import annotations

from aiohttp import web

from livesignal.http.upgrade import UpgradeTaker
from livesignal.signal.services.wiring import Services

SERVICES = web.AppKey("services", Services)
# Who takes over a connection whose request is a /ws upgrade (livesignal/http/server.py).
WS_UPGRADES = web.AppKey[UpgradeTaker]("ws_upgrades")
