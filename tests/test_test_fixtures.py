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
from redis.exceptions import ConnectionError as RedisConnectionError

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


async def test_aof_keeps_data_across_stop_and_start(own_redis: RedisServer) -> None:
    port = own_redis.port
    await write_keys(own_redis, 50)
    assert own_redis.stop() == 0
    own_redis.start()
    assert own_redis.port == port
    assert await read(own_redis.url, "room:1", "seq") == [b"kept", b"50"]


async def test_appendfsync_always_keeps_acknowledged_writes_through_sigkill(
    own_redis: RedisServer,
) -> None:
    await write_keys(own_redis, 200)
    assert own_redis.kill() == -9
    own_redis.start()
    assert await read(own_redis.url, "room:1", "seq") == [b"kept", b"200"]


async def test_a_stopped_redis_refuses_connections_and_starts_again(
    own_redis: RedisServer,
) -> None:
    redis = client(own_redis.url)
    try:
        await redis.set("k", "v")
        own_redis.stop()
        assert refuses(own_redis.port) and not own_redis.ping()
        with pytest.raises(RedisConnectionError):
            await redis.get("k")
        own_redis.start()
        assert await redis.get("k") == b"v"  # the same client reconnects on its next command
    finally:
        await redis.aclose()


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


async def test_make_cluster_stop_is_a_clean_sigterm(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(1)
    assert await cluster[0].stop() == 0
    assert "shutting down" in cluster[0].log_text()
