"""python-socketio 5 on aiohttp: the peer of livesignal in the bench (bench/run.py).

    python bench/compare/socketio_server.py PORT [PING_INTERVAL_SECONDS]

Clients emit "join" ROOM (acknowledged "ok") to enter a socket.io room; "chat" ROOM TEXT is
broadcast as "chat" TEXT to that room. Engine.IO's ping interval defaults to 25 s.
"""

from __future__ import annotations

import sys

import socketio
from aiohttp import web

ping_interval = float(sys.argv[2]) if len(sys.argv) > 2 else 25.0
sio = socketio.AsyncServer(async_mode="aiohttp", ping_interval=ping_interval, ping_timeout=20)
app = web.Application()
sio.attach(app)


@sio.event
async def join(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    return "ok"


@sio.event
async def chat(sid: str, room: str, text: str) -> None:
    await sio.emit("chat", text, room=room)


if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
