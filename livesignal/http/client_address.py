"""Which address a request comes from, honouring `limits.trusted_proxies` (PROTOCOL §7).

Behind a reverse proxy every connection comes from the proxy; only a peer that is a trusted
proxy may name the client in X-Forwarded-For. The header is read from the right, skipping
trusted proxies, so a client cannot claim an address by writing the header itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies
        )

    def _is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def of(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address: `peer`, or what trusted proxies say it forwarded for."""
        client = peer or ""
        if not forwarded_for or not self._is_trusted(client):
            return client
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            if not hop:
                continue
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return client  # a malformed chain is not believed past this point
            client = hop
            if not self._is_trusted(hop):
                return hop
        return client
