"""Free loopback ports for servers the tests start, chosen outside the ephemeral range.

A port taken with `bind(("127.0.0.1", 0))` and released comes from the kernel's ephemeral
range, the same range every outgoing connection and every `port 0` listener draws from. Between
release and the server's own bind, another process (a node's private node listener, a client
socket) could be handed that very port; CI once saw a node's /healthz answered by another
node's listener that way. Ports below the ephemeral range are only ever taken on purpose.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP port nothing listens on, not handed out before in this process."""
    highest = _ephemeral_start() - 1
    if highest <= LOWEST:  # an unusual ephemeral range: fall back to the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(200):
        port = random.randint(LOWEST, highest)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port between {LOWEST} and {highest}")
