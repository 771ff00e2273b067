"""python-socketio 5 on aiohttp: the fan-out peer of bench/compare.py.

    python bench/compare/socketio_server.py PORT

Clients emit "join" (acknowledged) to enter the one room; "chat" is broadcast to that room.
"""

from __future__ import annotations

import sys

import socketio
from aiohttp import web

ROOM = "room"

# Long ping interval: the raw-socket receivers of the bench do not answer Engine.IO pings.
sio = socketio.AsyncServer(async_mode="aiohttp", ping_interval=60, ping_timeout=60)
app = web.Application()
sio.attach(app)


@sio.event
async def join(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    return "ok"


@sio.event
async def chat(sid: str, data: str) -> None:
    await sio.emit("chat", data, room=ROOM)


if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
