"""Two anchors and two viewers through invite → accept → started → stop, over WebSockets.

    livesignal serve --config config/demo.toml &
    python examples/pk_demo.py --config config/demo.toml

Prints what each side sees and exits 0 when every side saw what it should.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from livesignal.client import SignalClient
from livesignal.settings import load_settings
from livesignal.signal.model.auth import TokenCodec


def show(who: str, event: dict[str, Any]) -> None:
    data = event.get("data", {})
    detail = ""
    if "relay" in data:
        relay = data["relay"]
        detail = f"relay {relay['sid']} status={relay['status']} reason={relay['reason']!r}"
    elif "user" in data:
        detail = f"user {data['user']['user_id']}"
    elif "user_id" in data:
        detail = f"user {data['user_id']} {data.get('reason', '')}".rstrip()
    where = f" [{event['live_id']} #{event['seq']}]" if "seq" in event else " [to me]"
    print(f"  {who:>6} sees {event['event']}{where} {detail}")


async def expect(who: str, client: SignalClient, name: str, **fields: Any) -> dict[str, Any]:
    """Wait for the event `name` (printing everything seen on the way) and check its relay."""
    while True:
        event = await client.next_event(timeout=5)
        show(who, event)
        if event["event"] != name:
            continue
        relay = event["data"].get("relay", {})
        if all(relay.get(key) == value for key, value in fields.items()):
            return event


async def run(url: str, secret: str) -> None:
    codec = TokenCodec(secret, 3600)
    suffix = str(int(time.time() * 1000))[-6:]  # fresh users per run

    async def client(user: str) -> SignalClient:
        token, _ = codec.issue(f"{user}_{suffix}", time.time())
        return await SignalClient.connect(url, token)

    alice, bob = await client("alice"), await client("bob")
    viewer_a, viewer_b = await client("viewer_a"), await client("viewer_b")
    clients = {"alice": alice, "bob": bob, "viewerA": viewer_a, "viewerB": viewer_b}
    try:
        print("1. alice and bob go live; a viewer joins each room")
        room_a = (await alice.request("room.create", title="Alice live"))["live_id"]
        room_b = (await bob.request("room.create", title="Bob live"))["live_id"]
        await alice.request("room.start", live_id=room_a)
        await bob.request("room.start", live_id=room_b)
        await viewer_a.request("room.join", live_id=room_a)
        await viewer_b.request("room.join", live_id=room_b)

        print("2. alice invites bob to a PK")
        started = await alice.request(
            "relay.start",
            init_room_id=room_a,
            recv_room_id=room_b,
            recv_user_id=bob.welcome["user_id"],
        )
        relay_id = started["relay_id"]
        print(f"  alice gets relay {relay_id} status={started['relay_status']}")
        await expect("bob", bob, "relay.invited", sid=relay_id, status=0)

        print("3. bob accepts")
        accepted = await bob.request("relay.accept", relay_id=relay_id)
        print(f"  bob gets relay_token {accepted['relay_token'][:24]}...")
        await expect("alice", alice, "relay.accepted", status=1)
        for who in ("viewerA", "viewerB"):
            await expect(who, clients[who], "pk.state", status=1)

        print("4. both anchors report their cross-room push")
        await alice.request("relay.started", relay_id=relay_id)
        await bob.request("relay.started", relay_id=relay_id)
        for who in ("viewerA", "viewerB"):
            await expect(who, clients[who], "pk.state", status=4)

        print("5. alice stops the PK")
        await alice.request("relay.stop", relay_id=relay_id)
        for who in ("alice", "bob", "viewerA", "viewerB"):
            await expect(who, clients[who], "pk.state", status=6, reason="stopped")

        print("6. both rooms end")
        await alice.request("room.stop", live_id=room_a)
        await bob.request("room.stop", live_id=room_b)
        await expect("viewerA", viewer_a, "room.stopped")
        await expect("viewerB", viewer_b, "room.stopped")
        print("PK demo complete: every side saw every change.")
    finally:
        for c in clients.values():
            await c.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--config", help="the server's config (for its auth.jwt_secret)")
    args = parser.parse_args()
    settings = load_settings(args.config)
    if not settings.auth.jwt_secret:
        print("pk_demo: the config has no auth.jwt_secret; use config/demo.toml", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(args.url, settings.auth.jwt_secret))
    except (TimeoutError, OSError) as exc:
        print(f"pk_demo: failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
