"""The test infrastructure itself: a real redis-server (AOF restarts, kill, outage) and a
cluster of real `livesignal serve` processes, each ended by its PID."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.cluster import Cluster, ClusterFactory, Node
from tests.redis_server import RedisServer, fresh_url


def client(url: str) -> aioredis.Redis:
    # No retries: a refused connection shows at once instead of after backoff.
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=2.0)


async def write_keys(server: RedisServer, writes: int) -> None:
    """A SET and `writes` INCRs, each acknowledged by Redis before the next."""
    redis = client(server.url)
    try:
        await redis.set("room:1", "kept")
        for _ in range(writes):
            await redis.incr("seq")
    finally:
        await redis.aclose()


async def read(url: str, *keys: str) -> list[bytes | str | None]:
    redis = client(url)
    try:
        return list(await redis.mget(keys))
    finally:
        await redis.aclose()


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            return False
    except ConnectionRefusedError:
        return True


async def test_redis_url_answers_ping_and_starts_empty(redis_url: str) -> None:
    redis = client(redis_url)
    try:
        assert await redis.ping() is True
        assert await redis.dbsize() == 0
    finally:
        await redis.aclose()


async def test_each_test_gets_the_session_server_flushed(redis_server: RedisServer) -> None:
    redis = client(redis_server.url)
    try:
        await redis.set("left:behind", "1")
    finally:
        await redis.aclose()
    assert await read(fresh_url(redis_server), "left:behind") == [None]
    redis_server.stop()  # a test that stopped the shared server: the next one gets it back
    assert await read(fresh_url(redis_server), "left:behind") == [None]


async def profile_status(node: Node, token: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        url = node.base_url + "/client/user/profile"
        async with session.get(url, headers={"Authorization": token}) as response:
            body = await response.json()
            return response.status, body["data"]["user_id"]


async def test_cluster_nodes_serve_die_by_sigkill_and_are_all_ended(tmp_path: Path) -> None:
    async with Cluster(tmp_path / "cluster") as cluster:
        first, second = await cluster.start(2, {"store": {"backend": "memory"}})
        assert first.port != second.port
        token = first.token("alice")  # the nodes share the secret
        assert await profile_status(first, token) == (200, "alice")
        assert await profile_status(second, token) == (200, "alice")
        assert f"listening on {first.base_url}" in first.log_text()
        assert await second.status("/readyz") == 200

        assert await first.sigkill() == -9
        assert refuses(first.port)
        assert await profile_status(second, second.token("bob")) == (200, "bob")
        pids = [node.pid for node in cluster.nodes]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped and gone: not even a zombie left


async def test_a_node_that_cannot_start_fails_with_its_log(make_cluster: ClusterFactory) -> None:
    with pytest.raises(AssertionError, match="server.prot"):
        await make_cluster(1, {"server": {"prot": 1}})
