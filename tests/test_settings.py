"""PROTOCOL §1 configuration: TOML + defaults, unknown keys refused by name, LIVESIGNAL_CONFIG."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from livesignal.random_secrets import adopt_secrets, fill_random_secrets, secret_values
from livesignal.settings import (
    CONFIG_ENV,
    Settings,
    SettingsError,
    check_workers,
    load_settings,
    settings_from_mapping,
)

REPO = Path(__file__).resolve().parent.parent
SECRET = "s" * 32


def test_defaults_are_the_documented_ones() -> None:
    s = Settings()
    assert (s.server.host, s.server.port, s.server.workers) == ("127.0.0.1", 8080, 1)
    assert (s.auth.jwt_secret, s.auth.token_ttl) == ("", 604800)
    assert (s.auth.server_access_key, s.auth.server_secret_key) == ("", "")
    assert (s.presence.heartbeat_interval, s.presence.missed_heartbeats) == (5.0, 3)
    assert s.presence.anchor_offline_close == 600.0
    assert (s.relay.accept_mode, s.relay.invite_timeout) == ("invite", 30.0)
    assert (s.store.backend, s.store.redis_url) == ("memory", "redis://127.0.0.1:6379/0")
    assert s.stream.publish_base == "rtmp://127.0.0.1:1935/live"
    assert s.stream.rtmp_play_base == "rtmp://127.0.0.1:1935/live"
    assert s.stream.flv_play_base == "http://127.0.0.1:8088/live"
    assert s.stream.hls_play_base == "http://127.0.0.1:8088/hls"
    assert (s.stream.security, s.stream.publish_key, s.stream.publish_ttl) == (
        "expiry",
        "",
        3600,
    )
    assert (s.rtc.app_id, s.rtc.access_key, s.rtc.secret_key, s.rtc.token_ttl) == (
        "livesignal",
        "ak",
        "",
        86400,
    )
    limits = s.limits
    assert (limits.extends_bytes, limits.sockets_per_user, limits.sockets_per_ip) == (4096, 10, 0)
    assert limits.trusted_proxies == []
    assert (limits.requests_per_second, limits.chat_per_second) == (50, 10)
    assert (limits.relay_starts_per_minute, limits.open_rooms_per_user) == (30, 20)
    assert (limits.header_timeout, limits.idle_timeout) == (10.0, 75.0)


def test_shipped_default_config_matches_the_built_in_defaults() -> None:
    with open(REPO / "config" / "default.toml", "rb") as handle:
        assert settings_from_mapping(tomllib.load(handle)) == Settings()


def test_empty_mapping_is_all_defaults() -> None:
    assert settings_from_mapping({}) == Settings()


def test_given_keys_override_and_the_rest_stay_default() -> None:
    s = settings_from_mapping(
        {"server": {"port": 9000}, "presence": {"heartbeat_interval": 2}, "relay": {}}
    )
    assert (s.server.host, s.server.port) == ("127.0.0.1", 9000)
    # An integer where a float is expected is fine (TOML writes 2 for 2.0).
    assert s.presence.heartbeat_interval == 2.0
    assert isinstance(s.presence.heartbeat_interval, float)
    assert s.presence.missed_heartbeats == 3
    assert s.relay == Settings().relay


def test_unknown_section_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match=r"\[serverz\]"):
        settings_from_mapping({"serverz": {"port": 1}})


def test_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match=r"presence\.heartbeat_intervall"):
        settings_from_mapping({"presence": {"heartbeat_intervall": 5.0}})


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ({"server": {"port": "8080"}}, "server.port"),
        ({"server": {"port": 80.5}}, "server.port"),
        ({"server": {"port": True}}, "server.port"),
        ({"server": {"host": 127}}, "server.host"),
        ({"presence": {"heartbeat_interval": "5"}}, "presence.heartbeat_interval"),
        ({"presence": {"missed_heartbeats": 3.0}}, "presence.missed_heartbeats"),
        ({"auth": {"jwt_secret": ["x"]}}, "auth.jwt_secret"),
        ({"relay": {"invite_timeout": False}}, "relay.invite_timeout"),
        ({"server": {"workers": "2"}}, "server.workers"),
        ({"server": {"workers": 2.0}}, "server.workers"),
    ],
)
def test_wrong_types_are_refused_by_name(raw: dict[str, dict[str, object]], name: str) -> None:
    with pytest.raises(SettingsError, match=name.replace(".", r"\.")):
        settings_from_mapping(raw)


def test_a_section_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(SettingsError, match="server"):
        settings_from_mapping({"server": 8080})


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ({"relay": {"accept_mode": "manual"}}, "relay.accept_mode"),
        ({"store": {"backend": "sqlite"}}, "store.backend"),
        ({"stream": {"security": "hmac"}}, "stream.security"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"presence": {"heartbeat_interval": 0}}, "presence.heartbeat_interval"),
        ({"presence": {"missed_heartbeats": -1}}, "presence.missed_heartbeats"),
        ({"presence": {"anchor_offline_close": 0.0}}, "presence.anchor_offline_close"),
        ({"relay": {"invite_timeout": -3.0}}, "relay.invite_timeout"),
        ({"auth": {"token_ttl": 0}}, "auth.token_ttl"),
        ({"auth": {"jwt_secret": "too-short"}}, "auth.jwt_secret"),
        ({"server": {"workers": 0}}, "server.workers"),
        ({"server": {"workers": -2}}, "server.workers"),
    ],
)
def test_bad_values_are_refused_by_name(raw: dict[str, dict[str, object]], name: str) -> None:
    with pytest.raises(SettingsError, match=name.replace(".", r"\.")):
        settings_from_mapping(raw)


@pytest.mark.parametrize("mode", ["none", "static", "expiry", "expiry_sk"])
def test_every_stream_security_mode_is_accepted(mode: str) -> None:
    assert settings_from_mapping({"stream": {"security": mode}}).stream.security == mode


def test_jwt_secret_of_32_bytes_is_accepted() -> None:
    assert settings_from_mapping({"auth": {"jwt_secret": SECRET}}).auth.jwt_secret == SECRET


def test_several_workers_need_the_redis_store_and_a_named_port() -> None:
    # Checked by `serve` once its flags are applied (check_workers), not on loading.
    one = settings_from_mapping({})
    check_workers(one)
    memory = settings_from_mapping({"server": {"workers": 2}})
    with pytest.raises(SettingsError, match=r'server\.workers = 2 needs store\.backend = "redis"'):
        check_workers(memory)
    redis = settings_from_mapping({"server": {"workers": 4}, "store": {"backend": "redis"}})
    check_workers(redis)
    redis.server.port = 0
    with pytest.raises(SettingsError, match=r"server\.port: 0"):
        check_workers(redis)


def test_empty_secrets_can_be_given_the_ones_another_process_made() -> None:
    made = settings_from_mapping({"rtc": {"secret_key": "configured"}})
    names = fill_random_secrets(made)
    assert names == ["auth.jwt_secret", "stream.publish_key"]
    given = secret_values(made, names)
    worker = settings_from_mapping({"rtc": {"secret_key": "configured"}})
    adopt_secrets(worker, {**given, "rtc.secret_key": "not this", "server.host": "nor this"})
    assert (worker.auth, worker.stream, worker.rtc, worker.server) == (
        made.auth,
        made.stream,
        made.rtc,
        Settings().server,
    )


# --- files and LIVESIGNAL_CONFIG -------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "livesignal.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    path = write(tmp_path, '[server]\nport = 9123\n[relay]\naccept_mode = "auto"\n')
    s = load_settings(path)
    assert (s.server.port, s.relay.accept_mode) == (9123, "auto")


def test_no_file_and_no_env_is_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert load_settings() == Settings()


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, "[server]\nport = 9124\n")))
    assert load_settings().server.port == 9124


def test_explicit_path_wins_over_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, "[server]\nport = 1111\n", "env.toml")))
    given = write(tmp_path, "[server]\nport = 2222\n", "given.toml")
    assert load_settings(given).server.port == 2222


def test_unknown_key_in_a_file_is_refused_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nbackend = "memory"\nredis_urll = "x"\n')
    with pytest.raises(SettingsError, match=r"store\.redis_urll"):
        load_settings(path)


def test_missing_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="nope.toml"):
        load_settings(tmp_path / "nope.toml")


def test_invalid_toml_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TOML"):
        load_settings(write(tmp_path, "[server\nport = \n"))


def test_ws_and_media_keys_are_read_and_out_of_bounds_values_refused() -> None:
    """[ws] and [media] are in the contract: a config listing every key at its default
    starts, and a value out of bounds is refused by name ([media]: test_settings_media.py)."""
    at_defaults = settings_from_mapping(
        {
            "ws": {"flush_interval": 0},
            "media": {"ice_servers": [], "public_ip": "", "udp_port_min": 0, "udp_port_max": 0},
        }
    )
    assert at_defaults.ws.flush_interval == 0.0
    assert at_defaults.media.udp_ports is None
    for raw, name in (
        ({"ws": {"flush_interval": 2.0}}, "ws.flush_interval"),  # past the 1 s bound
        ({"ws": {"flush_interval": -0.1}}, "ws.flush_interval"),
        ({"media": {"udp_port_min": 40000}}, "media.udp_port_max"),  # one end only
    ):
        with pytest.raises(SettingsError, match=name):
            settings_from_mapping(raw)


def test_float_keys_must_be_finite() -> None:
    for raw in (
        {"presence": {"heartbeat_interval": float("nan")}},
        {"limits": {"header_timeout": float("inf")}},
    ):
        with pytest.raises(SettingsError, match="finite"):
            settings_from_mapping(raw)
