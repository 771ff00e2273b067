"""PROTOCOL §5: a room's media lives on one node; gateway requests reaching another node (or
another worker) are forwarded to it. Real `livesignal serve` processes on one redis-server and
real aiortc peers, all on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.cluster import ClusterFactory
from tests.conftest import record_token

from ._rtc import SyntheticAudio, SyntheticVideo, connect, wait_for

RTC = {"app_id": "cluster-app", "access_key": "cluster-ak", "secret_key": "cluster-sk-0123456789"}
LOOPBACK_SITE = str(Path(__file__).parent / "loopback_site")


def rtc_token(room: str, user: str) -> str:
    payload = {
        "appId": RTC["app_id"],
        "roomName": room,
        "userId": user,
        "expireAt": int(time.time()) + 600,
        "permission": "user",
    }
    enc = base64.urlsafe_b64encode(orjson.dumps(payload)).decode()
    sign = hmac.new(RTC["secret_key"].encode(), enc.encode(), hashlib.sha1).digest()
    return record_token(f"{RTC['access_key']}:{base64.urlsafe_b64encode(sign).decode()}:{enc}")


def uris(reply: dict[str, Any]) -> dict[int, str]:
    return {item["mediaType"]: item["uri"] for item in reply["publishList"]}


async def test_a_subscriber_on_another_node_gets_the_publishers_media(
    make_cluster: ClusterFactory, redis_url: str
) -> None:
    cluster = await make_cluster(
        2, {"rtc": RTC}, redis_url=redis_url, env={"PYTHONPATH": LOOPBACK_SITE}
    )
    a, b = cluster[0], cluster[1]
    async with (
        aiohttp.ClientSession(base_url=a.base_url) as on_a,
        aiohttp.ClientSession(base_url=b.base_url) as on_b,
    ):
        publisher = await connect(
            on_a,  # type: ignore[arg-type]
            rtc_token("room-x", "alice"),
            "room-x",
            publish=[SyntheticAudio(), SyntheticVideo()],
        )
        published = uris(publisher.reply)
        # Node B has never seen the publisher: the request is forwarded to node A.
        listing = await (
            await on_b.get(
                "/media/resources",
                params={"room_id": "room-x"},
                headers={"Token": rtc_token("room-x", "bob")},
            )
        ).json()
        assert {item["uri"] for item in listing["list"]} == set(published.values())
        subscriber = await connect(
            on_b,  # type: ignore[arg-type]
            rtc_token("room-x", "bob"),
            "room-x",
            subscribe=[(published[1], "video"), (published[0], "audio")],
        )
        try:
            await wait_for(lambda: set(subscriber.received) == set(published.values()), 10)
            video = subscriber.received[published[1]]
            await wait_for(lambda: video.frames >= 5, 10)
        finally:
            await subscriber.close()
            await publisher.close()
        for session, user in ((on_a, "alice"), (on_b, "bob")):
            exit_reply = await (
                await session.post(
                    "/exit", headers={"Token": rtc_token("room-x", user), "Room-Id": "room-x"}
                )
            ).json()
            assert exit_reply == {"resultCode": 10000}
    # The media lived on node A alone: node B only forwarded.
    assert "room-x: alice published" in a.log_text()
    assert "published" not in b.log_text()


async def test_a_wechat_push_checked_on_another_node_is_decided_by_the_puller(
    make_cluster: ClusterFactory, redis_url: str
) -> None:
    cluster = await make_cluster(
        2, {"rtc": RTC, "stream": {"publish_key": "cluster-publish-key"}}, redis_url=redis_url
    )
    a, b = cluster[0], cluster[1]
    async with aiohttp.ClientSession() as session:
        exchange = await (
            await session.post(
                a.base_url + "/wechat/exchange",
                json={"rtmp": {"audio": True, "video": True}},
                headers={"Token": rtc_token("room-w", "mini"), "Room-Id": "room-w"},
            )
        ).json()
        assert exchange["resultCode"] == 10000
        push_url = exchange["rtmpPublishList"][0]["rtmpUri"]
        path, _, query = push_url.partition("?")
        app_name, stream = path.rsplit("/", 2)[-2:]
        form = {"app": app_name, "name": stream, **dict(p.split("=", 1) for p in query.split("&"))}
        # nginx asks node B; node A, which pulls that stream, answers.
        async with session.post(b.base_url + "/media/rtmp/on_publish", data=form) as answer:
            assert answer.status == 200
        forged = {**form, "token": "forged"}
        async with session.post(b.base_url + "/media/rtmp/on_publish", data=forged) as answer:
            assert answer.status == 403
        await wait_for(lambda: "refused unsigned or expired push" in a.log_text(), 5)
        assert "refused unsigned or expired push" not in b.log_text()


async def test_secrets_left_empty_are_shared_by_the_cluster(
    make_cluster: ClusterFactory, redis_url: str
) -> None:
    """No [rtc] or [stream] secrets configured: each node adopts the cluster's random ones
    (kept in Redis), so a room_token made by node A opens node B's gateway and a push URL
    signed by A is let in by B."""
    cluster = await make_cluster(2, redis_url=redis_url)
    a, b = cluster[0], cluster[1]
    headers = {"Authorization": a.token("anchor")}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(
            a.base_url + "/client/live/room/instance", json={"title": "t"}
        ) as reply:
            live_id = (await reply.json())["data"]["live_id"]
        async with session.put(f"{a.base_url}/client/live/room/{live_id}") as reply:
            started = (await reply.json())["data"]
        async with session.get(
            b.base_url + "/media/resources",
            params={"room_id": live_id},
            headers={"Token": record_token(started["room_token"]), "Room-Id": live_id},
        ) as reply:
            assert (await reply.json())["resultCode"] == 10000
        path, _, query = started["push_url"].partition("?")
        form = {"app": "live", "name": live_id, **dict(p.split("=", 1) for p in query.split("&"))}
        async with session.post(b.base_url + "/media/rtmp/on_publish", data=form) as reply:
            assert reply.status == 200


async def test_the_node_listener_takes_forwarded_gateway_requests_only(
    make_cluster: ClusterFactory, redis_url: str
) -> None:
    cluster = await make_cluster(1, redis_url=redis_url)
    node = cluster[0]
    await wait_for(lambda: "node address for forwarded media requests" in node.log_text(), 5)
    line = next(
        line for line in node.log_text().splitlines() if "node address for forwarded" in line
    )
    address = line.rsplit(" ", 1)[1]
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": node.token("alice")}
        async with session.get(f"http://{address}/client/user/profile", headers=headers) as r:
            assert r.status == 404  # no REST (nor /ws) on the node listener
        async with session.get(node.base_url + "/client/user/profile", headers=headers) as r:
            assert r.status == 200
