"""How clients outside reach the gateway's peers: `[media]` ice_servers, public_ip, UDP ports.

- `IcePolicy` turns the settings into what the media server and the exchange replies need:
  aiortc `RTCIceServer`s for the server's own peers, the same servers in the W3C
  `RTCIceServer` shape for clients (`iceServers`), and `announce()`, which writes `public_ip`
  into an answer in place of the private host addresses aioice gathered (mediasoup's
  announced address, LiveKit's node_ip). aioice still binds the local interfaces: a 1:1 NAT
  or a container's published ports carry `public_ip:port` to them.
- `ports_for_new_peers(ports)`: the UDP port range. aioice 0.13 always binds host candidates
  to port 0 (the kernel's choice) and has no option to change that (aiortc/aioice#47, the
  open PRs #63 and #112), and aiortc builds its `aioice.Connection` inside
  `RTCPeerConnection.setRemoteDescription`. So, once a range is configured, `install()`
  replaces the `Connection` name aiortc's ICE gatherer calls with `RangedConnection`, a
  subclass that binds its host sockets to a free port of the range current (a context
  variable) when it was created; with no range current it is aioice's Connection unchanged.
  The context variable keeps the range to the gateway's own peers (`MediaServer.exchange`
  runs under it): any other aiortc peer in the process (a test's client, say) is untouched.
  Besides the public Connection API the subclass relies on aioice's `StunProtocol`,
  `server_reflexive_candidate` and `Connection._protocols` (as of aioice 0.13).

The range covers the host candidates, where clients send media and ICE checks, and the
server-reflexive candidates STUN maps from them. The client side of a TURN allocation is an
outgoing socket to the TURN server whose local port stays the kernel's choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import ipaddress
import logging
import random
import socket
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aioice
import aioice.ice
import aioice.turn
import aiortc.rtcicetransport
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCIceServer

from livesignal.settings import MediaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IcePolicy:
    servers: tuple[tuple[tuple[str, ...], str, str], ...] = ()  # (urls, username, credential)
    public_ip: str = ""
    udp_ports: range | None = None

    @classmethod
    def from_settings(cls, media: MediaSettings) -> IcePolicy:
        servers = tuple((tuple(s.urls), s.username, s.credential) for s in media.ice_servers)
        return cls(servers, media.public_ip, media.udp_ports)

    def rtc_servers(self) -> list[RTCIceServer]:
        """The servers for the gateway's own aiortc peers (aiortc uses the first STUN and
        the first TURN server it can; an empty list keeps it off its default public STUN)."""
        return [
            RTCIceServer(urls=list(urls), username=username or None, credential=credential or None)
            for urls, username, credential in self.servers
        ]

    def client_servers(self) -> list[dict[str, Any]]:
        """The servers for clients: `iceServers` in the W3C RTCIceServer shape."""
        return [
            {"urls": list(urls), "username": username, "credential": credential}
            for urls, username, credential in self.servers
        ]

    def announce(self, answer: str) -> str:
        """`answer` with `public_ip` in place of every non-public host address of its family."""
        if not self.public_ip:
            return answer
        public = ipaddress.ip_address(self.public_ip)
        lines = answer.split("\r\n")
        for index, line in enumerate(lines):
            if line.startswith("a=candidate:"):
                lines[index] = _announced_candidate(line, public)
            elif line.startswith("c=IN IP"):
                lines[index] = _announced_connection(line, public)
        return "\r\n".join(lines)


def _hidden(address: str, public: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `address` is a private (non-global) one of the public address's family."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:  # an mDNS name, say: not ours to rewrite
        return False
    return parsed.version == public.version and not parsed.is_global and parsed != public


def _announced_candidate(line: str, public: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
    fields = line.split(" ")
    if len(fields) >= 8 and fields[6] == "typ" and fields[7] == "host":
        if _hidden(fields[4], public):
            fields[4] = str(public)
    return " ".join(fields)


def _announced_connection(line: str, public: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    fields = line.split(" ")  # c=IN IP4 <address>
    if len(fields) == 3 and _hidden(fields[2], public):
        fields[2] = str(public)
    return " ".join(fields)


# --- the UDP port range ------------------------------------------------------------------------

_PORTS: ContextVar[range | None] = ContextVar("livesignal_ice_udp_ports", default=None)


@contextlib.contextmanager
def ports_for_new_peers(ports: range | None) -> Iterator[None]:
    """ICE connections aiortc creates inside this block bind their host ports in `ports`."""
    if ports is None:
        yield
        return
    token = _PORTS.set(ports)
    try:
        yield
    finally:
        _PORTS.reset(token)


def install() -> None:
    """Have aiortc build `RangedConnection`s (idempotent). Raises RuntimeError if this
    aiortc no longer builds its ICE connections the way this hook expects, so a configured
    port range is refused at start-up rather than silently ignored."""
    current = getattr(aiortc.rtcicetransport, "Connection", None)
    if current is RangedConnection:
        return
    if current is not aioice.Connection:
        raise RuntimeError(
            "media.udp_port_min/max: this aiortc does not build aioice.Connection in "
            "aiortc.rtcicetransport; the port range cannot be applied"
        )
    if not _aioice_as_expected():
        raise RuntimeError(
            "media.udp_port_min/max: this aioice's Connection is not what the port range "
            "hook was written for (aioice 0.13); the port range cannot be applied"
        )
    setattr(aiortc.rtcicetransport, "Connection", RangedConnection)  # noqa: B010 (untyped)


def _aioice_as_expected() -> bool:
    """Whether aioice still has the internals `RangedConnection` uses besides its public API."""
    if not (
        callable(getattr(aioice.ice, "StunProtocol", None))
        and callable(getattr(aioice.ice, "server_reflexive_candidate", None))
        and isinstance(getattr(aioice.turn, "UDP_SOCKET_BUFFER_SIZE", None), int)
    ):
        return False
    parameters = list(inspect.signature(aioice.Connection.get_component_candidates).parameters)
    if parameters[:4] != ["self", "component", "addresses", "timeout"]:
        return False
    probe = aioice.Connection(ice_controlling=True)
    return isinstance(getattr(probe, "_protocols", None), list) and hasattr(probe, "stun_server")


class NoFreeUdpPort(OSError):
    """Every port of `[media] udp_port_min..udp_port_max` is taken: the gateway is full.

    An operator's capacity limit, not a bug and not the client's doing: the exchange is
    answered 50000 with `message` and logged as one warning line, without a traceback.
    """

    def __init__(self, ports: range) -> None:
        self.message = f"no free UDP port in {ports.start}..{ports.stop - 1}"
        super().__init__(errno.EADDRINUSE, self.message)
        self.ports = ports

    def __str__(self) -> str:
        return self.message


class RangedConnection(aioice.Connection):
    """aioice's Connection, binding host candidates in the port range current at creation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.udp_ports = _PORTS.get()

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        ports = self.udp_ports
        if ports is None:
            return await super().get_component_candidates(component, addresses, timeout)
        hosts: list[aioice.ice.StunProtocol] = []
        full: list[str] = []  # addresses with every port of the range taken
        for address in addresses:
            try:
                protocol = await self._bind_host(component, address, ports)
            except NoFreeUdpPort:
                full.append(address)
                continue
            if protocol is None:
                continue
            # Owned by the connection at once: a close() racing this gathering closes it.
            self._protocols.append(protocol)
            hosts.append(protocol)
        candidates = [protocol.local_candidate for protocol in hosts]
        # Server-reflexive candidates from our host sockets (IPv4, as aioice does) ...
        reflexive = [
            asyncio.create_task(aioice.ice.server_reflexive_candidate(protocol, self.stun_server))
            for protocol in hosts
            if self.stun_server and ipaddress.ip_address(protocol.local_candidate.host).version == 4
        ]
        # ... and the TURN relayed candidate from aioice itself, given no host address.
        candidates += await super().get_component_candidates(component, [], timeout)
        if full and not candidates and not reflexive:
            # The range is exhausted: refuse this peer rather than answer with an offer
            # nobody can connect to. The caller logs it (one line: not a bug, a full range).
            raise NoFreeUdpPort(ports)
        if full:
            log.warning(
                "ICE: no free UDP port in %d..%d on %s, so no host candidate there "
                "(widen media.udp_port_min..udp_port_max)",
                ports.start,
                ports.stop - 1,
                ", ".join(full),
            )
        if reflexive:
            done, pending = await asyncio.wait(reflexive, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is None:
                    candidates.append(task.result()[0])
        return candidates

    async def _bind_host(
        self, component: int, address: str, ports: range
    ) -> aioice.ice.StunProtocol | None:
        """A host candidate's protocol on `address`, None when the address itself cannot be
        bound; NoFreeUdpPort when every port of the range is taken there."""
        try:
            sock = _bound_socket(address, ports)
        except OSError as exc:  # as aioice does: an address it cannot bind gives no candidate
            log.info("ICE: could not bind to %s: %s", address, exc)
            return None
        if sock is None:
            raise NoFreeUdpPort(ports)
        try:
            loop = asyncio.get_running_loop()
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice.ice.StunProtocol(self), sock=sock
                )
            except BaseException:
                sock.close()
                raise
        except OSError as exc:  # as aioice does: an address it cannot bind gives no candidate
            log.info("ICE: could not bind to %s: %s", address, exc)
            return None
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
        host, port = transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        return protocol


def _bound_socket(address: str, ports: range) -> socket.socket | None:
    """A UDP socket bound to `address` and a free port of `ports` (None if every port is
    taken), trying them in order from a random one so that peers spread over the range."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    start = random.randrange(len(ports))
    for offset in range(len(ports)):
        port = ports[(start + offset) % len(ports)]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise  # the address itself is unusable: no other port would do
        sock.setblocking(False)
        return sock
    return None
