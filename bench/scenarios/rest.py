"""Scenario 5, REST and invitations: heartbeats per second on one process (memory store);
`--workers 2` against one worker (both on Redis, which workers need); invitation latency
(REST relay start → relay.invited on the receiver's socket) on one node, and across two
nodes on one Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.cluster_bench import redis_server
from bench.common import Server, children, cpu_times, percentile, running_server, token
from bench.loadgen.http import run_gets
from bench.rest_heartbeat import set_up
from bench.ws_bench import InviteLatency, bench_invite

MEMBERS = 1000
# Fewer members on Redis keep the set-up short (a REST join costs 2-3 ms there, 64 in flight,
# the same at 200 and 1000 members); presence lasts long enough to outlast the set-up.
REDIS_MEMBERS = 200
LONG_PRESENCE = "[presence]\nheartbeat_interval = 60.0\n"
PROCESSES, CONNECTIONS = 2, 32  # load generator: 64 requests in flight
FULL = {"seconds": 5.0, "invites": 300}
QUICK = {"seconds": 2.0, "invites": 30}


@dataclass
class RestRow:
    setup: str
    members: int = 0
    join_ms: float = 0.0  # mean time of one set-up REST join, 64 in flight
    per_second: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us: float = 0.0  # server CPU per request, all its processes
    client_us: float = 0.0  # the load generator's CPU per request
    errors: int = 0
    note: str = ""


@dataclass
class InviteRow:
    setup: str
    latency: InviteLatency | None = None
    note: str = ""


@dataclass
class RestResult:
    heartbeats: list[RestRow] = field(default_factory=list)
    invites: list[InviteRow] = field(default_factory=list)

    def one_process(self) -> RestRow | None:
        return self.heartbeats[0] if self.heartbeats and self.heartbeats[0].per_second else None


def server_cpu(server: Server) -> float:
    pids = [server.process.pid, *children(server.process.pid)]
    return sum(sum(cpu_times(pid)) for pid in pids)


async def heartbeats(
    label: str, toml: str, args: Sequence[str], seconds: float, members: int
) -> RestRow:
    print(f"-- REST heartbeats: {label}, {members} members", flush=True)
    row = RestRow(label, members)
    try:
        with running_server(toml, args) as server:
            if args:
                await asyncio.sleep(2.0)  # every worker listening, not only the first
            users = [token(f"hb-user{i}") for i in range(members)]
            joining = time.perf_counter()
            live_id = await set_up(server.http, users, token("hb-anchor"))
            row.join_ms = (time.perf_counter() - joining) / members * 1000
            path = f"/client/live/room/heartbeat/{live_id}"
            before = server_cpu(server)
            load = await run_gets(
                server.port,
                path,
                users,
                processes=PROCESSES,
                connections=CONNECTIONS,
                duration=seconds,
            )
            cpu = server_cpu(server) - before
    except Exception as error:  # one set-up failing does not end the run
        row.note = f"failed: {error!r}"[:200]
        print(f"   {row.note}", flush=True)
        return row
    done = load["ok"] + load["errors"]
    row.per_second = load["ok"] / load["elapsed"]
    row.errors = load["errors"]
    if load["latencies"]:
        row.p50_ms = percentile(load["latencies"], 0.5) * 1000
        row.p99_ms = percentile(load["latencies"], 0.99) * 1000
    row.cpu_us = cpu / done * 1e6 if done else 0.0
    row.client_us = load["client_cpu"] / done * 1e6 if done else 0.0
    if row.errors:
        row.note = f"{row.errors} errors, e.g. {load['first_error'].decode(errors='replace')}"
    print(
        f"   {row.per_second:,.0f} req/s, p50 {row.p50_ms:.2f} ms p99 {row.p99_ms:.2f} ms, "
        f"{row.cpu_us:.0f} us server CPU/request (load generator {row.client_us:.0f} us) "
        f"{row.note}",
        flush=True,
    )
    return row


async def invites(label: str, count: int, toml: str = "", nodes: int = 1) -> InviteRow:
    print(f"-- invitations: {label}", flush=True)
    row = InviteRow(label)
    try:
        with running_server(toml) as a:
            if nodes == 1:
                row.latency = await bench_invite(a, count, quiet=True)
            else:
                with running_server(toml) as b:
                    row.latency = await bench_invite(a, count, receiver=b, quiet=True)
    except Exception as error:  # one set-up failing does not end the run
        row.note = f"failed: {error!r}"[:200]
    if row.latency is not None:
        print(f"   p50 {row.latency.p50_ms:.2f} ms p99 {row.latency.p99_ms:.2f} ms", flush=True)
    else:
        print(f"   {row.note}", flush=True)
    return row


async def run(quick: bool) -> RestResult:
    sizes = QUICK if quick else FULL
    seconds, count = sizes["seconds"], int(sizes["invites"])
    result = RestResult()
    one = await heartbeats("one process, memory store", LONG_PRESENCE, (), seconds, MEMBERS)
    result.heartbeats.append(one)
    result.invites.append(await invites("one node, memory store", count))
    with redis_server() as (url, _):
        redis = f'[store]\nbackend = "redis"\nredis_url = "{url}"\n'
        for workers in (1, 2):
            label = f"`--workers {workers}`, redis store"
            args = ("--workers", str(workers))
            row = await heartbeats(label, redis + LONG_PRESENCE, args, seconds, REDIS_MEMBERS)
            result.heartbeats.append(row)
        label = "two nodes on one Redis (start on A, socket on B)"
        result.invites.append(await invites(label, count, redis, nodes=2))
    return result


def markdown(result: RestResult) -> str:
    lines = [
        "## 5. REST heartbeats, workers, invitations",
        "",
        "`GET /client/live/room/heartbeat/{live_id}` by the room's members in turn, "
        f"{PROCESSES * CONNECTIONS} requests in flight (keep-alive connections, one request "
        f"each at a time) from {PROCESSES} load-generator processes on the same 2 cores. "
        "Server CPU per request counts every process of the server (a supervisor's workers "
        "included), not Redis. The members join first over REST (64 in flight); the mean time "
        f"per join is shown too; the Redis runs use {REDIS_MEMBERS} members to keep the set-up "
        "short.",
        "",
        "| server | members (ms per join) | heartbeats/s | latency p50 / p99 ms "
        "| µs server CPU/request | µs load-generator CPU/request | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result.heartbeats:
        if row.per_second:
            lines.append(
                f"| {row.setup} | {row.members:,} ({row.join_ms:.1f}) | **{row.per_second:,.0f}** "
                f"| {row.p50_ms:.2f} / "
                f"{row.p99_ms:.2f} | {row.cpu_us:.0f} | {row.client_us:.0f} | {row.note} |"
            )
        else:
            lines.append(f"| {row.setup} | {row.members:,} | – | – | – | – | {row.note} |")
    lines += [
        "",
        "Invitation latency: `POST /client/relay/start` → `relay.invited` on the receiver's "
        "socket, one at a time (each then cancelled).",
        "",
        "| setup | invitations | p50 ms | p99 ms | max ms | notes |",
        "|---|---|---|---|---|---|",
    ]
    for invite in result.invites:
        lat = invite.latency
        if lat is None:
            lines.append(f"| {invite.setup} | – | – | – | – | {invite.note} |")
        else:
            lines.append(
                f"| {invite.setup} | {lat.count} | {lat.p50_ms:.2f} | {lat.p99_ms:.2f} | "
                f"{lat.max_ms:.2f} | {invite.note} |"
            )
    return "\n".join(lines)
