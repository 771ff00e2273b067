"""`[media]` settings (PROTOCOL §1, §6): STUN/TURN servers, public_ip and the UDP port range."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from livesignal.settings import IceServer, SettingsError, settings_from_mapping

CONFIG = """
[media]
public_ip = "203.0.113.7"
udp_port_min = 40000
udp_port_max = 40099

[[media.ice_servers]]
urls = ["stun:stun.example.com:3478", "stuns:stun.example.com"]

[[media.ice_servers]]
urls = "turn:[2001:db8::1]:3478?transport=tcp"
username = "gateway"
credential = "s3cret"
"""


def test_a_full_media_section_is_read() -> None:
    media = settings_from_mapping(tomllib.loads(CONFIG)).media
    assert media.public_ip == "203.0.113.7"
    assert media.udp_ports == range(40000, 40100)
    assert media.ice_servers == [
        IceServer(["stun:stun.example.com:3478", "stuns:stun.example.com"]),
        IceServer(["turn:[2001:db8::1]:3478?transport=tcp"], "gateway", "s3cret"),  # one URL
    ]


def test_ipv6_public_ip_and_a_one_port_range_are_fine() -> None:
    media = settings_from_mapping(
        {"media": {"public_ip": "2001:db8::7", "udp_port_min": 50000, "udp_port_max": 50000}}
    ).media
    assert media.udp_ports == range(50000, 50001)  # how wide is the operator's choice


@pytest.mark.parametrize(
    ("media", "message"),
    [
        ({"ice_servers": "stun:x"}, r"media\.ice_servers: expected a list of tables"),
        ({"ice_servers": ["stun:x"]}, r"media\.ice_servers\[0\]: expected a table"),
        ({"ice_servers": [{}]}, r"media\.ice_servers\[0\]\.urls: at least one"),
        ({"ice_servers": [{"urls": [1]}]}, r"ice_servers\[0\]\.urls: expected a list of strings"),
        ({"ice_servers": [{"urls": ["http://x"]}]}, r"ice_servers\[0\]\.urls\[0\]: 'http://x'"),
        ({"ice_servers": [{"urls": ["stun:"]}]}, r"urls\[0\]: 'stun:' is not a stun:"),
        ({"ice_servers": [{"urls": ["stun:x:99999"]}]}, r"urls\[0\]: 'stun:x:99999'"),
        ({"ice_servers": [{"urls": ["stun:x?transport=udp"]}]}, "only TURN URLs take"),
        (
            {
                "ice_servers": [
                    {"urls": ["turns:x?transport=udp"], "username": "u", "credential": "c"}
                ]
            },
            "turns: .TLS. runs over tcp",
        ),
        ({"ice_servers": [{"urls": ["turn:x"]}]}, r"ice_servers\[0\]: a TURN server needs"),
        (
            {"ice_servers": [{"urls": ["turn:x"], "username": "u", "credential": 5}]},
            r"ice_servers\[0\]\.credential: expected a string",
        ),
        (
            {"ice_servers": [{"urls": ["stun:x"], "password": "p"}]},
            r"key media\.ice_servers\[0\]\.password",
        ),
        ({"public_ip": "example.com"}, r"media\.public_ip: 'example\.com' is not an IP address"),
        ({"public_ip": "0.0.0.0"}, r"media\.public_ip: '0\.0\.0\.0' cannot be advertised"),
        ({"public_ip": 7}, r"media\.public_ip: expected str"),
        ({"udp_port_max": 40000}, r"media\.udp_port_min: 0 is not a UDP port"),
        ({"udp_port_min": 80, "udp_port_max": 90}, r"media\.udp_port_min: 80 is not a UDP port"),
        ({"udp_port_min": 40000, "udp_port_max": 70000}, r"media\.udp_port_max: 70000 is not"),
        ({"udp_port_min": 40010, "udp_port_max": 40000}, r"udp_port_min: 40010 is above"),
    ],
)
def test_bad_media_values_are_refused_naming_the_key(media: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings_from_mapping({"media": media})
