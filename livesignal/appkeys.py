"""Typed keys for what the application object carries (aiohttp's web.AppKey)."""

from __future__ import annotations

from aiohttp import web

from livesignal.signal.services import Services

SERVICES = web.AppKey("services", Services)
