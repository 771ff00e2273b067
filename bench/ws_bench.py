"""WebSocket benchmarks against one `livesignal serve` process on loopback.

    python bench/ws_bench.py invite  [--count 1000]
    python bench/ws_bench.py memory  [--sockets 1000]
    python bench/ws_bench.py [--flush-interval S] fanout  [--sockets 1000 --messages 200]

invite: REST relay start → the receiver's socket gets relay.invited; p50/p99 latency.
memory: N idle sockets joined to one room; server RSS per socket.
fanout: one room of N raw sockets; the anchor sends chat messages over its socket; every
        socket must receive every message. Reports deliveries/s and server CPU seconds per
        100k deliveries. Receivers are minimal (count frames in the byte stream) so the client
        side costs little of the shared CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, percentile, rss_bytes, running_server, token  # noqa: E402
from livesignal.client import SignalClient  # noqa: E402


async def live_room(client: SignalClient) -> str:
    room = await client.request("room.create", title="bench")
    await client.request("room.start", live_id=room["live_id"])
    return str(room["live_id"])


@dataclass
class InviteLatency:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu: float  # seconds, for `count` start + cancel cycles


async def bench_invite(
    server: Server, count: int, receiver: Server | None = None, quiet: bool = False
) -> InviteLatency:
    """REST relay start on `server` -> relay.invited on the receiver's socket (on `receiver`,
    another node sharing its Redis, when given)."""
    alice = await SignalClient.connect(server.ws, token("alice"))
    bob = await SignalClient.connect((receiver or server).ws, token("bob"))
    room_a, room_b = await live_room(alice), await live_room(bob)
    body = {"init_room_id": room_a, "recv_room_id": room_b, "recv_user_id": "bob"}
    headers = {"Authorization": token("alice")}
    latencies = []
    cpu_before = server.cpu_seconds()
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(count):
            started = time.perf_counter()
            async with http.post(f"{server.http}/client/relay/start", json=body) as response:
                relay_id = (await response.json())["data"]["relay_id"]
            await bob.next_event("relay.invited")
            latencies.append(time.perf_counter() - started)
            async with http.post(f"{server.http}/client/relay/{relay_id}/cancel") as response:
                await response.read()
            await bob.next_event("relay.canceled")
    cpu = server.cpu_seconds() - cpu_before
    await alice.close()
    await bob.close()
    result = InviteLatency(
        count,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        max(latencies) * 1000,
        cpu,
    )
    if not quiet:
        where = "node A -> receiver socket on node B" if receiver else "receiver socket"
        print(f"invite latency over {count} invitations (REST start -> {where}):")
        print(
            f"  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  max {result.max_ms:.2f} ms"
        )
        print(f"  server CPU {cpu:.2f} s for {count} start+cancel cycles")
    return result


class RawReceiver:
    """A socket that completed the upgrade and now only counts chat.message frames."""

    MARKER = b'"event":"chat.message"'

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.count = 0

    @classmethod
    async def open(cls, port: int, user: str) -> RawReceiver:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            f"GET /ws?token={token(user)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        return cls(reader, writer)

    def send_text(self, text: str) -> None:
        payload = text.encode()
        assert len(payload) < 126
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    async def count_until(self, expected: int) -> None:
        tail = b""
        while self.count < expected:
            chunk = await self.reader.read(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the socket")
            data = tail + chunk
            self.count += data.count(self.MARKER)
            tail = data[-(len(self.MARKER) - 1) :]


async def bench_fanout(server: Server, sockets: int, messages: int) -> None:
    anchor = await SignalClient.connect(server.ws, token("anchor"))
    live_id = await live_room(anchor)
    receivers = []
    for index in range(sockets):
        receiver = await RawReceiver.open(server.port, f"viewer{index}")
        receiver.send_text(
            orjson.dumps({"id": 1, "type": "room.join", "data": {"live_id": live_id}}).decode()
        )
        receivers.append(receiver)
    info = await anchor.request("room.info", live_id=live_id)
    while info["online_count"] < sockets + 1:
        await asyncio.sleep(0.1)
        info = await anchor.request("room.info", live_id=live_id)
    counting = [asyncio.create_task(r.count_until(messages)) for r in receivers]
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    window = 16  # requests in flight from the publisher
    pending: set[asyncio.Task[object]] = set()
    for index in range(messages):
        pending.add(
            asyncio.create_task(
                anchor.request(
                    "chat.send", live_id=live_id, text=f"message {index:06d} " + "x" * 64
                )
            )
        )
        if len(pending) >= window:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*pending)
    await asyncio.gather(*counting)
    elapsed = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu_before
    deliveries = sockets * messages
    print(f"fan-out: {messages} chat messages to one room of {sockets} sockets")
    print(
        f"  {deliveries} deliveries in {elapsed:.2f} s = {deliveries / elapsed:,.0f} deliveries/s"
    )
    print(f"  server CPU {cpu:.2f} s = {cpu / deliveries * 100_000:.2f} CPU s per 100k deliveries")
    for receiver in receivers:
        receiver.writer.close()
    await anchor.close()


async def bench_memory(server: Server, sockets: int) -> None:
    anchor = await SignalClient.connect(server.ws, token("anchor"))
    live_id = await live_room(anchor)
    before = rss_bytes(server.process.pid)
    receivers = []
    for index in range(sockets):
        receiver = await RawReceiver.open(server.port, f"idle{index}")
        join = {"id": 1, "type": "room.join", "data": {"live_id": live_id}}
        receiver.send_text(orjson.dumps(join).decode())
        receivers.append(receiver)
    info = await anchor.request("room.info", live_id=live_id)
    while info["online_count"] < sockets + 1:
        await asyncio.sleep(0.1)
        info = await anchor.request("room.info", live_id=live_id)
    after = rss_bytes(server.process.pid)
    print(f"memory: {sockets} idle sockets joined to one room")
    print(
        f"  server RSS +{(after - before) / 2**20:.1f} MiB = "
        f"{(after - before) / sockets / 1024:.1f} KiB per socket"
    )
    for receiver in receivers:
        receiver.writer.close()
    await anchor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="which", required=True)
    invite = sub.add_parser("invite")
    invite.add_argument("--count", type=int, default=1000)
    memory = sub.add_parser("memory")
    memory.add_argument("--sockets", type=int, default=1000)
    fanout = sub.add_parser("fanout")
    fanout.add_argument("--sockets", type=int, default=1000)
    fanout.add_argument("--messages", type=int, default=200)
    parser.add_argument(
        "--flush-interval", type=float, default=0.0, help="[ws] flush_interval of the server"
    )
    args = parser.parse_args()
    # Long heartbeats: the raw receivers do not answer pings.
    config = "[presence]\nheartbeat_interval = 60.0\n"
    config += f"[ws]\nflush_interval = {args.flush_interval}\n"
    with running_server(config) as server:
        if args.which == "invite":
            asyncio.run(bench_invite(server, args.count))
        elif args.which == "memory":
            asyncio.run(bench_memory(server, args.sockets))
        else:
            asyncio.run(bench_fanout(server, args.sockets, args.messages))


if __name__ == "__main__":
    main()
