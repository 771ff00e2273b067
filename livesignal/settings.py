"""Typed settings: TOML file + built-in defaults. Unknown sections or keys are errors."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "LIVESIGNAL_CONFIG"


class SettingsError(ValueError):
    """The configuration cannot be used; the message names the offending key."""


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1  # processes sharing host:port (SO_REUSEPORT); > 1 needs the redis store
    cors_origins: list[str] = field(default_factory=lambda: ["*"])


@dataclass
class AuthSettings:
    jwt_secret: str = ""
    token_ttl: int = 604800
    server_access_key: str = ""
    server_secret_key: str = ""


@dataclass
class PresenceSettings:
    heartbeat_interval: float = 5.0
    missed_heartbeats: int = 3
    anchor_offline_close: float = 600.0

    @property
    def timeout(self) -> float:
        """Silence longer than this means the member is gone."""
        return self.heartbeat_interval * self.missed_heartbeats


@dataclass
class RelaySettings:
    accept_mode: str = "invite"
    invite_timeout: float = 30.0


@dataclass
class StoreSettings:
    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"


@dataclass
class StreamSettings:
    publish_base: str = "rtmp://127.0.0.1:1935/live"
    rtmp_play_base: str = "rtmp://127.0.0.1:1935/live"
    flv_play_base: str = "http://127.0.0.1:8088/live"
    hls_play_base: str = "http://127.0.0.1:8088/hls"
    security: str = "expiry"
    publish_key: str = ""  # "" = random per process (see random_secrets.py)
    publish_ttl: int = 3600


@dataclass
class RtcSettings:
    app_id: str = "livesignal"
    access_key: str = "ak"
    secret_key: str = ""  # "" = random per process (see random_secrets.py)
    token_ttl: int = 86400


@dataclass
class LimitsSettings:
    """PROTOCOL §7: what one client may store, send and hold. 0 turns a limit off."""

    extends_bytes: int = 4096  # any one extends map as compact JSON
    sockets_per_user: int = 10
    sockets_per_ip: int = 0
    trusted_proxies: list[str] = field(default_factory=list)
    requests_per_second: float = 50.0  # burst 2x
    chat_per_second: float = 10.0  # burst 5x
    relay_starts_per_minute: float = 30.0
    open_rooms_per_user: int = 20
    header_timeout: float = 10.0
    idle_timeout: float = 75.0


@dataclass
class AppSettings:
    im_app_id: str = ""  # GET /client/app/config: the apps' IM service id


@dataclass
class CompatSettings:
    """Where the API documents and the original deployment differ (PROTOCOL §3.6)."""

    profile: str = "docs"  # "docs" | "original"


@dataclass
class WsSettings:
    # Seconds within which a room's events after a write wait to go out together, one write
    # per socket (0 = each frame at once; a quiet room's event always goes at once). 20 ms:
    # about half the CPU per delivery at 100 events/s, and at 20/s, where a room is quiet
    # between events, a server-added delay of p99 20 ms against 15 at 0 (bench/RESULTS.md).
    flush_interval: float = 0.02


@dataclass
class IceServer:
    """One STUN or TURN server: the W3C RTCIceServer's fields (`urls` always a list)."""

    urls: list[str]
    username: str = ""
    credential: str = ""


@dataclass
class MediaSettings:
    """PROTOCOL §6: how the media gateway is reached from outside."""

    ice_servers: list[IceServer] = field(default_factory=list)  # used and handed to clients
    public_ip: str = ""  # advertised in answers instead of private host addresses
    udp_port_min: int = 0  # 0/0 = any port; else every ICE host port is in [min, max]
    udp_port_max: int = 0

    @property
    def udp_ports(self) -> range | None:
        """The ICE UDP ports as a range, or None for "any port"."""
        if self.udp_port_min == self.udp_port_max == 0:
            return None
        return range(self.udp_port_min, self.udp_port_max + 1)


@dataclass
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    presence: PresenceSettings = field(default_factory=PresenceSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    rtc: RtcSettings = field(default_factory=RtcSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    app: AppSettings = field(default_factory=AppSettings)
    compat: CompatSettings = field(default_factory=CompatSettings)
    ws: WsSettings = field(default_factory=WsSettings)
    media: MediaSettings = field(default_factory=MediaSettings)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise SettingsError naming the first bad key; run again after command-line overrides."""
        _check_choice("relay.accept_mode", self.relay.accept_mode, ("invite", "auto"))
        _check_choice("compat.profile", self.compat.profile, ("docs", "original"))
        _check_choice("store.backend", self.store.backend, ("memory", "redis"))
        _check_choice(
            "stream.security", self.stream.security, ("none", "static", "expiry", "expiry_sk")
        )
        if not 0 <= self.server.port <= 65535:
            raise SettingsError(f"server.port: {self.server.port} is not a TCP port")
        if self.server.workers < 1:
            raise SettingsError(f"server.workers: must be at least 1, got {self.server.workers}")
        _check_cors_origins(self.server.cors_origins)
        positive = {
            "presence.heartbeat_interval": self.presence.heartbeat_interval,
            "presence.missed_heartbeats": self.presence.missed_heartbeats,
            "presence.anchor_offline_close": self.presence.anchor_offline_close,
            "relay.invite_timeout": self.relay.invite_timeout,
            "auth.token_ttl": self.auth.token_ttl,
            "stream.publish_ttl": self.stream.publish_ttl,
            "rtc.token_ttl": self.rtc.token_ttl,
        }
        for name, value in positive.items():
            if value <= 0:
                raise SettingsError(f"{name}: must be greater than 0, got {value}")
        secret = self.auth.jwt_secret
        if secret and len(secret.encode()) < 32:
            raise SettingsError("auth.jwt_secret: must be at least 32 bytes (or empty)")
        _check_limits(self.limits)
        _check_ws(self.ws)
        _check_media(self.media)


def check_workers(settings: Settings) -> None:
    """Refuse server.workers > 1 where the workers could not act as one server.

    Checked by `livesignal serve` after its flags are applied (`--workers 1` overrides a
    file's workers = 4), not when settings are loaded: only serve runs workers.
    """
    workers = settings.server.workers
    if workers == 1:
        return
    backend = settings.store.backend
    if backend != "redis":
        raise SettingsError(
            f'server.workers = {workers} needs store.backend = "redis": the {backend!r} '
            "store lives inside one process, so workers would not share rooms, users or "
            "presence (use workers = 1, or the redis store)"
        )
    if settings.server.port == 0:
        raise SettingsError(
            f"server.port: 0 (any free port) cannot be shared by {workers} workers; name a port"
        )


# A browser's Origin: scheme "://" host (name, IPv4 or [IPv6]) and an optional port, no path.
_ORIGIN = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://"
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def _check_cors_origins(origins: list[str]) -> None:
    for index, origin in enumerate(origins):
        match = _ORIGIN.fullmatch(origin)
        if origin != "*" and (match is None or int(match["port"] or 0) > 65535):
            raise SettingsError(
                f'server.cors_origins[{index}]: {origin!r} is not "*" or an origin '
                '"scheme://host[:port]" (no path, not even "/")'
            )


def _check_limits(limits: LimitsSettings) -> None:
    never_negative = {
        "limits.extends_bytes": limits.extends_bytes,
        "limits.sockets_per_user": limits.sockets_per_user,
        "limits.sockets_per_ip": limits.sockets_per_ip,
        "limits.requests_per_second": limits.requests_per_second,
        "limits.chat_per_second": limits.chat_per_second,
        "limits.relay_starts_per_minute": limits.relay_starts_per_minute,
        "limits.open_rooms_per_user": limits.open_rooms_per_user,
        "limits.header_timeout": limits.header_timeout,
        "limits.idle_timeout": limits.idle_timeout,
    }
    for name, value in never_negative.items():
        if value < 0:
            raise SettingsError(f"{name}: must be >= 0 (0 turns the limit off), got {value}")
    for index, address in enumerate(limits.trusted_proxies):
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError as exc:
            raise SettingsError(
                f"limits.trusted_proxies[{index}]: {address!r} is not an IP address or network"
            ) from exc


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(f"{name}: {value!r} is not one of {', '.join(choices)}")


MAX_FLUSH_INTERVAL = 1.0  # a bound on the delay coalescing may add to every frame


def _check_ws(ws: WsSettings) -> None:
    if not 0 <= ws.flush_interval <= MAX_FLUSH_INTERVAL:
        raise SettingsError(
            f"ws.flush_interval: must be 0 (write at once) .. {MAX_FLUSH_INTERVAL} seconds"
        )


# W3C / RFC 7064-7065 server URLs: scheme ":" host [":" port], and for TURN "?transport=".
_ICE_URL = re.compile(
    r"(?P<scheme>stuns?|turns?):"
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)
MIN_UDP_PORT = 1024  # below it ports are privileged, and the range is the operator's firewall


def _check_media(media: MediaSettings) -> None:
    for index, server in enumerate(media.ice_servers):
        _check_ice_server(f"media.ice_servers[{index}]", server)
    if media.public_ip:
        try:
            address = ipaddress.ip_address(media.public_ip)
        except ValueError as exc:
            raise SettingsError(
                f"media.public_ip: {media.public_ip!r} is not an IP address (or empty)"
            ) from exc
        if address.is_unspecified or address.is_multicast:
            raise SettingsError(
                f"media.public_ip: {media.public_ip!r} cannot be advertised to clients"
            )
    low, high = media.udp_port_min, media.udp_port_max
    if (low, high) == (0, 0):
        return
    for name, port in (("media.udp_port_min", low), ("media.udp_port_max", high)):
        if not MIN_UDP_PORT <= port <= 65535:
            raise SettingsError(
                f"{name}: {port} is not a UDP port in {MIN_UDP_PORT}..65535 (set both "
                "udp_port_min and udp_port_max to 0 for any port)"
            )
    if low > high:
        raise SettingsError(f"media.udp_port_min: {low} is above media.udp_port_max {high}")


def _check_ice_server(where: str, server: IceServer) -> None:
    if not isinstance(server, IceServer):
        raise SettingsError(f"{where}: expected a table {{urls, username, credential}}")
    if not server.urls:
        raise SettingsError(f"{where}.urls: at least one stun:, stuns:, turn: or turns: URL")
    for index, url in enumerate(server.urls):
        match = _ICE_URL.fullmatch(url) if isinstance(url, str) else None
        if match is None or int(match["port"] or 1) not in range(1, 65536):
            raise SettingsError(
                f"{where}.urls[{index}]: {url!r} is not a stun:, stuns:, turn: or turns: URL "
                '("turn:host[:port][?transport=udp|tcp]")'
            )
        if match["transport"] and not match["scheme"].startswith("turn"):
            raise SettingsError(f"{where}.urls[{index}]: {url!r}: only TURN URLs take ?transport")
        if match["scheme"] == "turns" and match["transport"] == "udp":
            raise SettingsError(f"{where}.urls[{index}]: {url!r}: turns: (TLS) runs over tcp")
        if match["scheme"].startswith("turn") and not (server.username and server.credential):
            raise SettingsError(
                f"{where}: a TURN server needs a username and a credential ({url!r})"
            )
    for key in ("username", "credential"):
        if not isinstance(getattr(server, key), str):
            raise SettingsError(f"{where}.{key}: expected a string")


def _ice_servers(name: str, value: Any) -> list[IceServer]:
    """[[media.ice_servers]] tables as IceServers; `urls` may be one string or a list."""
    if not isinstance(value, list):
        raise SettingsError(f"{name}: expected a list of tables, got {value!r}")
    servers = []
    for index, table in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(table, dict):
            raise SettingsError(f"{where}: expected a table {{urls, username, credential}}")
        unknown = sorted(set(table) - {"urls", "username", "credential"})
        if unknown:
            raise SettingsError(f"unknown config key {where}.{unknown[0]}")
        urls = table.get("urls", [])
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
            raise SettingsError(f"{where}.urls: expected a list of strings, got {urls!r}")
        for key in ("username", "credential"):
            if not isinstance(table.get(key, ""), str):
                raise SettingsError(f"{where}.{key}: expected a string, got {table[key]!r}")
        servers.append(
            IceServer(list(urls), table.get("username", ""), table.get("credential", ""))
        )
    return servers


def _coerce(name: str, value: Any, expected: type) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{name}: expected a finite number, got {value!r}")
    if expected is list and name == "media.ice_servers":
        return _ice_servers(name, value)
    if expected is list:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise SettingsError(f"{name}: expected a list of strings, got {value!r}")
        return list(value)
    if isinstance(value, bool) or not isinstance(value, expected):
        raise SettingsError(f"{name}: expected {expected.__name__}, got {value!r}")
    return value


def settings_from_mapping(raw: dict[str, Any]) -> Settings:
    """Build settings from a parsed TOML document, rejecting unknown sections and keys."""
    sections: dict[str, Any] = {}
    known = {f.name: f for f in dataclasses.fields(Settings)}
    for section_name, section_values in raw.items():
        if section_name not in known:
            raise SettingsError(f"unknown config section [{section_name}]")
        if not isinstance(section_values, dict):
            raise SettingsError(f"[{section_name}] must be a table")
        section_type = _section_type(section_name)
        hints = {f.name: f for f in dataclasses.fields(section_type)}
        values: dict[str, Any] = {}
        for key, value in section_values.items():
            if key not in hints:
                raise SettingsError(f"unknown config key {section_name}.{key}")
            expected = type(getattr(section_type(), key))
            values[key] = _coerce(f"{section_name}.{key}", value, expected)
        sections[section_name] = section_type(**values)
    settings = Settings(**sections)
    relay_given = raw.get("relay", {})
    if settings.compat.profile == "original" and "accept_mode" not in relay_given:
        # The original SDKs agree a PK over their own IM: their server started relays at 1.
        settings.relay.accept_mode = "auto"
    return settings


def _section_type(name: str) -> type[Any]:
    default = getattr(Settings(), name)
    return type(default)


def load_settings(path: str | Path | None = None) -> Settings:
    """Load settings from `path`, else from $LIVESIGNAL_CONFIG, else the built-in defaults."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV) or None
    if chosen is None:
        return Settings()
    try:
        with open(chosen, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(f"cannot read config {chosen}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config {chosen} is not valid TOML: {exc}") from exc
    return settings_from_mapping(raw)
