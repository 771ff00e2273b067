"""`[media]` reachability (PROTOCOL §6): ice_servers, public_ip and the UDP port range."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aioice
import aioice.ice
import aiortc.rtcicetransport
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aioice import stun
from aiortc import RTCPeerConnection

from livesignal.media import ice
from livesignal.media.http.mount import GATEWAY_KEY, add_media_routes
from livesignal.media.ice import IcePolicy
from livesignal.settings import IceServer, MediaSettings, Settings
from livesignal.signal.model.clock import SystemClock
from tests.ports import free_port

from ._rtc import CONFIG, SyntheticVideo, connect, post, wait_for

TokenFor = Callable[[str, str], str]
MakeClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
PUBLIC_IP = "203.0.113.7"  # TEST-NET-3: never reached, the tests only read the answer


async def gateway_with(
    aiohttp_client: MakeClient, settings: Settings, media: MediaSettings
) -> TestClient[Any, Any]:
    settings.media = media
    settings.validate()
    app = web.Application()
    add_media_routes(app, settings, SystemClock())
    return await aiohttp_client(app)


def candidates(sdp: str, kind: str = "host") -> list[tuple[str, int]]:
    """(address, port) of the description's candidates of that type."""
    found = []
    for line in sdp.splitlines():
        fields = line.split()
        if line.startswith("a=candidate:") and fields[7] == kind:
            found.append((fields[4], int(fields[5])))
    return found


async def offer_only(client: TestClient[Any, Any], token: str, room: str) -> tuple[Any, Any]:
    """One /exchange publishing video; the client never takes the answer (its candidates
    may name an address that must not be contacted). (reply, client pc) - close the pc."""
    pc = RTCPeerConnection(CONFIG)
    pc.addTrack(SyntheticVideo())
    await pc.setLocalDescription(await pc.createOffer())
    body = {"sdp": {"type": "offer", "sdp": pc.localDescription.sdp}}
    return await post(client, "/exchange", token, room, body), pc


async def test_public_ip_replaces_the_private_host_addresses_of_the_answer(
    aiohttp_client: MakeClient, settings: Settings, token_for: TokenFor
) -> None:
    client = await gateway_with(aiohttp_client, settings, MediaSettings(public_ip=PUBLIC_IP))
    reply, pc = await offer_only(client, token_for("r", "alice"), "r")
    assert reply["resultCode"] == 10000, reply
    answer = reply["sdp"]["sdp"]
    hosts = candidates(answer)
    assert hosts and {address for address, _ in hosts} == {PUBLIC_IP}
    assert f"c=IN IP4 {PUBLIC_IP}" in answer and "127.0.0.1" not in answer
    # aioice still binds the local interface: the same ports, on 127.0.0.1
    server_pc = client.app[GATEWAY_KEY].media.connection("r", "alice")
    assert server_pc is not None
    local = candidates(server_pc.localDescription.sdp)
    assert sorted(local) == sorted(("127.0.0.1", port) for _, port in hosts)
    await post(client, "/exit", token_for("r", "alice"), "r", None)
    await pc.close()


def test_announce_rewrites_only_non_public_host_addresses_of_its_family() -> None:
    answer = "\r\n".join(
        [
            "v=0",
            "c=IN IP4 10.0.0.5",
            "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host",
            "a=candidate:2 1 udp 2130706431 fd00::5 40001 typ host",
            "a=candidate:3 1 udp 2130706431 93.184.216.34 40002 typ host",
            "a=candidate:4 1 udp 1694498815 192.0.2.80 50000 typ srflx raddr 10.0.0.5 rport 1",
            "",
        ]
    )
    announced = IcePolicy(public_ip=PUBLIC_IP).announce(answer).split("\r\n")
    assert announced == [
        "v=0",
        f"c=IN IP4 {PUBLIC_IP}",
        f"a=candidate:1 1 udp 2130706431 {PUBLIC_IP} 40000 typ host",
        "a=candidate:2 1 udp 2130706431 fd00::5 40001 typ host",  # IPv6: not this address
        "a=candidate:3 1 udp 2130706431 93.184.216.34 40002 typ host",  # already public
        "a=candidate:4 1 udp 1694498815 192.0.2.80 50000 typ srflx raddr 10.0.0.5 rport 1",
        "",
    ]
    assert IcePolicy().announce(answer) == answer  # no public_ip: untouched


class StunServer(asyncio.DatagramProtocol):
    """A loopback STUN server that answers binding requests and remembers who sent them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # RFC 5389: a binding request is type 0x0001 with the magic cookie at bytes 4..8
        if data[:2] != b"\x00\x01" or data[4:8] != b"\x21\x12\xa4\x42":
            return
        self.requests.append(addr)
        request = stun.parse_message(data)
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        self.transport.sendto(bytes(response), addr)


@pytest.fixture
async def stun_server() -> AsyncIterator[tuple[StunServer, int]]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(StunServer, local_addr=("127.0.0.1", 0))
    yield server, transport.get_extra_info("sockname")[1]
    transport.close()


async def test_ice_servers_are_returned_to_clients_and_used_by_the_servers_peer(
    aiohttp_client: MakeClient,
    settings: Settings,
    token_for: TokenFor,
    stun_server: tuple[StunServer, int],
) -> None:
    server, port = stun_server
    closed = free_port()  # a TURN server that refuses at once (TCP): nothing leaves loopback
    servers = [
        IceServer([f"stun:127.0.0.1:{port}"]),
        IceServer([f"turn:127.0.0.1:{closed}?transport=tcp"], "alice", "s3cret"),
    ]
    client = await gateway_with(aiohttp_client, settings, MediaSettings(ice_servers=servers))
    reply, pc = await offer_only(client, token_for("r", "alice"), "r")
    assert reply["resultCode"] == 10000, reply
    assert reply["iceServers"] == [
        {"urls": [f"stun:127.0.0.1:{port}"], "username": "", "credential": ""},
        {
            "urls": [f"turn:127.0.0.1:{closed}?transport=tcp"],
            "username": "alice",
            "credential": "s3cret",
        },
    ]
    # the server's peer asked our STUN server (the client uses none) from its host port,
    # and offers the server-reflexive candidate it learnt
    answer = reply["sdp"]["sdp"]
    assert server.requests
    assert set(server.requests) <= set(candidates(answer))
    assert candidates(answer, "srflx") == [server.requests[0]]
    await post(client, "/exit", token_for("r", "alice"), "r", None)
    await pc.close()

    # the WeChat gateway's reply carries them too
    wechat = await post(
        client, "/wechat/exchange", token_for("r", "wx"), "r", {"rtmp": {"audio": False}}
    )
    assert wechat["iceServers"] == reply["iceServers"]
    await post(client, "/wechat/exit", token_for("r", "wx"), "r", None)


def port_range(size: int) -> range:
    low = free_port()
    return range(low, low + size)


async def test_ice_uses_only_ports_of_the_configured_range(
    aiohttp_client: MakeClient, settings: Settings, token_for: TokenFor
) -> None:
    ports = port_range(8)
    media = MediaSettings(udp_port_min=ports.start, udp_port_max=ports.stop - 1)
    client = await gateway_with(aiohttp_client, settings, media)
    alice = await connect(client, token_for("r", "alice"), "r", publish=[SyntheticVideo()])
    (uri,) = [item["uri"] for item in alice.reply["publishList"]]
    bob = await connect(client, token_for("r", "bob"), "r", subscribe=[(uri, "video")])
    # media flows over the ranged ports
    await wait_for(lambda: uri in bob.received and bob.received[uri].frames >= 3, 10)

    gateway = client.app[GATEWAY_KEY]
    for user, rtc in (("alice", alice), ("bob", bob)):
        answered = candidates(rtc.reply["sdp"]["sdp"])
        assert answered and all(port in ports for _, port in answered), answered
        server_pc = gateway.media.connection("r", user)
        assert server_pc is not None
        gathered = [
            candidate
            for transceiver in server_pc.getTransceivers()
            for candidate in transceiver.sender.transport.transport.iceGatherer.getLocalCandidates()
        ]
        assert gathered and all(c.port in ports for c in gathered)
        # only the gateway's peers: the client's own peer picked its ports as ever
        offered = candidates(rtc.pc.localDescription.sdp)
        assert offered and not any(port in ports for _, port in offered)
    for user, rtc in (("alice", alice), ("bob", bob)):
        await post(client, "/exit", token_for("r", user), "r", None)
        await rtc.close()


async def test_a_peer_finding_every_port_of_the_range_taken_is_refused(
    aiohttp_client: MakeClient,
    settings: Settings,
    token_for: TokenFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ports = port_range(2)
    media = MediaSettings(udp_port_min=ports.start, udp_port_max=ports.stop - 1)
    client = await gateway_with(aiohttp_client, settings, media)
    with contextlib.ExitStack() as taken:
        for port in ports:
            sock = taken.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            with contextlib.suppress(OSError):  # already someone else's: taken all the same
                sock.bind(("127.0.0.1", port))
        with caplog.at_level(logging.INFO, logger="livesignal"):
            reply, pc = await offer_only(client, token_for("r", "alice"), "r")
        await pc.close()
    # the operator's range is full: not the client's fault, and said plainly
    assert reply == {
        "resultCode": 50000,
        "message": f"no free UDP port in {ports.start}..{ports.stop - 1}",
    }
    assert client.app[GATEWAY_KEY].media.peer_count() == 0
    # one warning line naming the range, no traceback, nothing logged as an error
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert loud[0].levelno == logging.WARNING and loud[0].exc_info is None
    assert f"{ports.start}..{ports.stop - 1}" in loud[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)

    # ports free up: the next client gets one, and nothing of the refused peer held any
    reply, pc = await offer_only(client, token_for("r", "alice"), "r")
    assert reply["resultCode"] == 10000, reply
    ((_, port),) = candidates(reply["sdp"]["sdp"])
    assert port in ports
    await post(client, "/exit", token_for("r", "alice"), "r", None)
    await pc.close()


def test_a_port_range_is_refused_at_start_up_on_an_aioice_it_was_not_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as before any gateway installed the hook
    monkeypatch.setattr(aiortc.rtcicetransport, "Connection", aioice.Connection)
    monkeypatch.delattr(aioice.ice, "server_reflexive_candidate")
    with pytest.raises(RuntimeError, match="port range cannot be applied"):
        ice.install()
    assert aiortc.rtcicetransport.Connection is aioice.Connection  # left alone
