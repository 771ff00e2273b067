"""Put on PYTHONPATH of a `livesignal serve` node started by the media cluster tests: its
aiortc peers offer 127.0.0.1 only, like the test's own peers (tests/media/conftest.py), so
all media traffic stays on loopback."""

import aioice.ice

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
