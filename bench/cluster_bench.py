"""livesignal on Redis: several `livesignal serve` nodes on one redis-server, on loopback.

    python bench/cluster_bench.py [--sockets 1000] [--messages 200] [--invites 500]

Starts its own redis-server (a free port, no persistence) and the nodes, and stops them all by
PID at the end. Reports:
  invite:    REST relay start on node A -> relay.invited on the receiver's socket on node B
  fan-out:   one room of N sockets, all on node A, then spread over nodes A and B; server CPU
             per delivery (livesignal processes; Redis apart)
  heartbeat: REST heartbeats per second served by one node (1000 members, 64 in flight)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Server,
    cpu_times,
    free_port,
    running_server,
    stop,
    token,
    wait_for_port,
)
from bench.ws_bench import RawReceiver, bench_invite, live_room  # noqa: E402
from livesignal.client import SignalClient  # noqa: E402


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


@contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, process)
            yield f"redis://127.0.0.1:{port}/0", process.pid
        finally:
            stop(process)


async def bench_fanout(
    nodes: list[Server], redis_pid: int, sockets: int, messages: int, label: str
) -> float:
    anchor = await SignalClient.connect(nodes[0].ws, token("anchor"))
    live_id = await live_room(anchor)
    receivers = []
    join = orjson.dumps({"id": 1, "type": "room.join", "data": {"live_id": live_id}}).decode()
    for index in range(sockets):
        node = nodes[index % len(nodes)]
        receiver = await RawReceiver.open(node.port, f"{label}-viewer{index}")
        receiver.send_text(join)
        receivers.append(receiver)
    info = await anchor.request("room.info", live_id=live_id)
    while info["online_count"] < sockets + 1:
        await asyncio.sleep(0.2)
        info = await anchor.request("room.info", live_id=live_id)
    counting = [asyncio.create_task(r.count_until(messages)) for r in receivers]
    pids = [node.process.pid for node in nodes]
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    redis_before = cpu_seconds(redis_pid)
    started = time.perf_counter()
    pending: set[asyncio.Task[object]] = set()
    for index in range(messages):
        text = f"message {index:06d} " + "x" * 64
        pending.add(asyncio.create_task(anchor.request("chat.send", live_id=live_id, text=text)))
        if len(pending) >= 16:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*pending)
    await asyncio.gather(*counting)
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    redis_cpu = cpu_seconds(redis_pid) - redis_before
    deliveries = sockets * messages
    per = cpu / deliveries * 1e6
    print(f"fan-out, {sockets} sockets on {len(nodes)} node(s), {messages} messages:")
    print(
        f"  {deliveries / elapsed:,.0f} deliveries/s; livesignal CPU {cpu:.2f} s = "
        f"{per:.2f} us per delivery; redis CPU {redis_cpu:.2f} s"
    )
    for receiver in receivers:
        receiver.writer.close()
    await anchor.close()
    return per


async def bench_heartbeat(node: Server, members: int, seconds: float) -> None:
    anchor = await SignalClient.connect(node.ws, token("hb-anchor"))
    live_id = await live_room(anchor)
    tokens = [token(f"hb-user{i}") for i in range(members)]
    async with aiohttp.ClientSession() as http:
        for user_token in tokens:
            url = f"{node.http}/client/live/room/user/{live_id}"
            async with http.post(url, headers={"Authorization": user_token}) as response:
                await response.read()
        done = 0
        stop_at = time.perf_counter() + seconds
        cpu_before = cpu_seconds(node.process.pid)

        async def beat(worker: int) -> None:
            nonlocal done
            index = worker
            url = f"{node.http}/client/live/room/heartbeat/{live_id}"
            while time.perf_counter() < stop_at:
                headers = {"Authorization": tokens[index % members]}
                async with http.get(url, headers=headers) as response:
                    await response.read()
                done += 1
                index += 64

        started = time.perf_counter()
        await asyncio.gather(*(beat(worker) for worker in range(64)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(node.process.pid) - cpu_before
    print(f"heartbeat on one node: {done / elapsed:,.0f} req/s, {cpu / done * 1e6:.0f} us CPU/req")
    await anchor.close()


async def run(args: argparse.Namespace) -> None:
    with redis_server() as (url, redis_pid), ExitStack() as stack:
        config = f'[store]\nbackend = "redis"\nredis_url = "{url}"\n'
        config += "[presence]\nheartbeat_interval = 60.0\n"
        a = stack.enter_context(running_server(config))
        b = stack.enter_context(running_server(config))
        await bench_invite(a, args.invites, receiver=b)
        one = await bench_fanout([a], redis_pid, args.sockets, args.messages, "one")
        two = await bench_fanout([a, b], redis_pid, args.sockets, args.messages, "two")
        print(f"  a delivery across two nodes costs {two / one:.2f}x one on a single node")
        await bench_heartbeat(a, 1000, args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--invites", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
