"""The one operation table: every operation once, exposed by REST and by WebSocket alike.

A handler takes the caller and its parameters (path, query and body fields merged, or a
frame's `data`), validates every parameter first (400 before 404/403/601) and calls a service.

Over a socket a call also carries the socket itself (`Call.socket`, a `SocketControl`): a
join or start then attaches the socket to the room's events, a resume replays history onto
it, and auth.refresh renews its token. Those rules live here, with the operation, so that the
socket transport runs every operation the same way: look it up, call it, reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from livesignal.signal.model.auth import Identity
from livesignal.signal.model.errors import BadRequest, Forbidden
from livesignal.signal.model.events import RoomEvent
from livesignal.signal.model.params import Params
from livesignal.signal.services.presence import Hold, Joined
from livesignal.signal.services.rooms import NewRoom
from livesignal.signal.services.wiring import Services

# (a join-like action, run with the hold the socket should take) -> what it joined
AttachAction = Callable[[Hold], Awaitable[Joined]]


class SocketControl(Protocol):
    """What an operation called over a socket may do to that socket (ws/connection.py)."""

    async def attach(self, live_id: str, action: AttachAction, *, joins: bool = True) -> Joined:
        """Run `action` and receive the room's events from the seq it reports on; they are
        held back until the reply is written. `joins`: the socket holds the membership."""
        ...

    def deliver_history(self, events: list[RoomEvent], seq: int) -> None:
        """Write these room events now (ahead of the reply), then go on from `seq`."""
        ...

    def reidentify(self, identity: Identity) -> None:
        """The socket acts as `identity` from now on (a refreshed token)."""
        ...


@dataclass(frozen=True, slots=True)
class Call:
    caller: Identity
    params: Params
    socket: SocketControl | None = None  # the calling socket; None over REST

    @property
    def via_socket(self) -> bool:  # the few rules that differ by transport read this
        return self.socket is not None


def _socket_of(c: Call, operation: str) -> SocketControl:
    if c.socket is None:
        raise BadRequest(f"{operation} is a WebSocket operation")
    return c.socket


Handler = Callable[[Services, Call], Awaitable[dict[str, Any]]]


# --- rooms -----------------------------------------------------------------------------------


async def room_create(s: Services, c: Call) -> dict[str, Any]:
    p = c.params
    spec = NewRoom(
        title=p.text("title"),
        notice=p.opt_text("notice") or "",
        cover_url=p.opt_text("cover_url") or "",
        extends=p.opt_str_map("extends"),
        start_at=p.opt_time("start_at"),
        end_at=p.opt_time("end_at"),
        publish_expire_at=p.opt_time("publish_expire_at"),
    )
    return await s.rooms.create(c.caller, spec)


async def room_info(s: Services, c: Call) -> dict[str, Any]:
    return await s.rooms.info(c.caller, c.params.text("live_id"))


async def room_start(s: Services, c: Call) -> dict[str, Any]:
    live_id = c.params.text("live_id")
    if c.socket is None:
        return await s.rooms.start(c.caller, live_id)
    # The anchor joins with this socket's hold; an admin starting someone else's room is not
    # made a member, but its socket receives the room's events all the same.
    is_anchor = (await s.rooms.get(live_id)).anchor_id == c.caller.user_id

    async def start(hold: Hold) -> Joined:
        return await s.rooms.start_and_join(c.caller, live_id, hold=hold)

    joined = await c.socket.attach(live_id, start, joins=is_anchor)
    return await s.rooms.attach_reply(joined, c.caller)


async def room_stop(s: Services, c: Call) -> dict[str, Any]:
    return await s.rooms.stop(c.caller, c.params.text("live_id"))


async def room_delete(s: Services, c: Call) -> dict[str, Any]:
    return await s.rooms.delete(c.caller, c.params.text("live_id"))


async def room_search(s: Services, c: Call) -> dict[str, Any]:
    keyword = c.params.opt_text("keyword") or ""
    return await s.rooms.search(c.caller, keyword, c.params.page())


async def room_list(s: Services, c: Call) -> dict[str, Any]:
    return await s.rooms.list_live(c.caller, c.params.page())


async def room_anchor_list(s: Services, c: Call) -> dict[str, Any]:
    return await s.rooms.list_of_anchor(c.caller, c.params.page())


async def room_join(s: Services, c: Call) -> dict[str, Any]:
    live_id = c.params.text("live_id")
    if c.socket is None:
        return await s.rooms.joined_reply(await s.rooms.join(c.caller, live_id), c.caller)

    async def join(hold: Hold) -> Joined:
        return await s.rooms.join(c.caller, live_id, hold=hold)

    joined = await c.socket.attach(live_id, join)
    return await s.rooms.attach_reply(joined, c.caller)


async def room_resume(s: Services, c: Call) -> dict[str, Any]:
    """Join again and receive what was missed after `since` (PROTOCOL §4.5), before the reply."""
    socket = _socket_of(c, "room.resume")
    live_id = c.params.text("live_id")
    since = c.params.opt_int("since")
    if since is None or since < 0:
        raise BadRequest("since is required: the last seq received, >= 0")
    await s.rooms.check_resume(live_id, since)

    async def rejoin(hold: Hold) -> Joined:
        return await s.rooms.join(c.caller, live_id, hold=hold)

    await socket.attach(live_id, rejoin)
    replay = await s.rooms.replay(live_id, since)
    socket.deliver_history(replay.events, replay.seq)  # what was asked, even if it had some
    return {"recovered": replay.recovered, "seq": replay.seq}


async def room_leave(s: Services, c: Call) -> dict[str, Any]:
    await s.presence.leave(c.caller.user_id, c.params.text("live_id"))
    return {}


async def room_heartbeat(s: Services, c: Call) -> dict[str, Any]:
    live_id = c.params.text("live_id")
    return await s.presence.heartbeat(c.caller.user_id, live_id, rest=not c.via_socket)


async def room_extends(s: Services, c: Call) -> dict[str, Any]:
    live_id = c.params.text("live_id")
    extends = c.params.str_map("extends")
    return await s.rooms.update_extends(c.caller, live_id, extends)


async def room_user_list(s: Services, c: Call) -> dict[str, Any]:
    live_id = c.params.text("live_id")
    return await s.rooms.user_list(c.caller, live_id, c.params.page())


# --- relays ----------------------------------------------------------------------------------


async def relay_start(s: Services, c: Call) -> dict[str, Any]:
    p = c.params
    init_room_id, recv_room_id = p.text("init_room_id"), p.text("recv_room_id")
    recv_user_id = p.text("recv_user_id")
    return await s.relays.start(c.caller, init_room_id, recv_room_id, recv_user_id)


async def relay_info(s: Services, c: Call) -> dict[str, Any]:
    return await s.relays.info(c.params.text("relay_id"))


async def relay_token(s: Services, c: Call) -> dict[str, Any]:
    return await s.relays.token(c.caller, c.params.text("relay_id"))


async def relay_accept(s: Services, c: Call) -> dict[str, Any]:
    return await s.relays.accept(c.caller, c.params.text("relay_id"))


async def relay_reject(s: Services, c: Call) -> dict[str, Any]:
    relay_id = c.params.text("relay_id")
    reason = c.params.opt_text("reason") or ""
    return await s.relays.reject(c.caller, relay_id, reason)


async def relay_cancel(s: Services, c: Call) -> dict[str, Any]:
    return await s.relays.cancel(c.caller, c.params.text("relay_id"))


async def relay_pending(s: Services, c: Call) -> dict[str, Any]:
    return await s.relays.pending(c.caller)


async def relay_started(s: Services, c: Call) -> dict[str, Any]:
    return await s.relays.started(c.caller, c.params.text("relay_id"))


async def relay_stop(s: Services, c: Call) -> dict[str, Any]:
    return await s.relays.stop(c.caller, c.params.text("relay_id"))


async def relay_extends(s: Services, c: Call) -> dict[str, Any]:
    relay_id = c.params.text("relay_id")
    extends = c.params.str_map("extends")
    return await s.relays.update_extends(c.caller, relay_id, extends)


# --- users -----------------------------------------------------------------------------------


async def user_profile(s: Services, c: Call) -> dict[str, Any]:
    return await s.users.profile(c.caller)


async def user_update(s: Services, c: Call) -> dict[str, Any]:
    p = c.params
    return await s.users.update(
        c.caller,
        nick=p.opt_text("nick"),
        avatar=p.opt_text("avatar"),
        extends=p.opt_str_map("extends"),
    )


async def user_get(s: Services, c: Call) -> dict[str, Any]:
    return await s.users.show(c.params.text("user_id"))


MAX_USER_IDS = 100


def _id_list(c: Call, name: str) -> list[str]:
    """`a,b`, or repeated (`name=a&name=b`, a JSON list), or both: the ids, at most 100."""
    raw = c.params.raw(name)
    parts = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(part, str) for part in parts):
        raise BadRequest(f"{name} is required: a comma-separated string or a list of strings")
    ids = [item.strip() for part in parts for item in part.split(",") if item.strip()]
    if not ids:
        raise BadRequest(f"{name} is required")
    if len(ids) > MAX_USER_IDS:
        raise BadRequest(f"at most {MAX_USER_IDS} {name}")
    return ids


async def user_list(s: Services, c: Call) -> dict[str, Any]:
    return await s.users.show_many(_id_list(c, "user_ids"))


async def user_imusers(s: Services, c: Call) -> dict[str, Any]:
    """The users behind IM user ids (what a chat message names), in the order asked."""
    im_ids = []
    for item in _id_list(c, "im_user_ids"):
        if not (item.isascii() and item.isdigit() and len(item) <= 18):
            raise BadRequest("im_user_ids must be integers")
        im_ids.append(int(item))
    return await s.users.show_by_im_ids(im_ids)


async def app_config(s: Services, c: Call) -> dict[str, Any]:
    return {"im_app_id": s.settings.app.im_app_id}


# --- chat (WebSocket only: REST clients poll) --------------------------------------------------


async def chat_send(s: Services, c: Call) -> dict[str, Any]:
    live_id = c.params.text("live_id")
    text = c.params.text("text")
    return await s.chat.send(c.caller, live_id, text)


# --- the socket itself ------------------------------------------------------------------------


async def auth_refresh(s: Services, c: Call) -> dict[str, Any]:
    socket = _socket_of(c, "auth.refresh")
    identity = s.admission.verify(c.params.text("token"))
    if identity.user_id != c.caller.user_id:
        raise Forbidden("the new token is for another user")
    socket.reidentify(identity)
    return {"exp": identity.exp}


OPERATIONS: dict[str, Handler] = {
    "room.create": room_create,
    "room.info": room_info,
    "room.start": room_start,
    "room.stop": room_stop,
    "room.delete": room_delete,
    "room.search": room_search,
    "room.list": room_list,
    "room.anchor_list": room_anchor_list,
    "room.join": room_join,
    "room.resume": room_resume,
    "room.leave": room_leave,
    "room.heartbeat": room_heartbeat,
    "room.extends": room_extends,
    "room.user_list": room_user_list,
    "relay.start": relay_start,
    "relay.info": relay_info,
    "relay.token": relay_token,
    "relay.accept": relay_accept,
    "relay.reject": relay_reject,
    "relay.cancel": relay_cancel,
    "relay.pending": relay_pending,
    "relay.started": relay_started,
    "relay.stop": relay_stop,
    "relay.extends": relay_extends,
    "user.profile": user_profile,
    "user.update": user_update,
    "user.get": user_get,
    "user.list": user_list,
    "user.imusers": user_imusers,
    "app.config": app_config,
    "chat.send": chat_send,
    "auth.refresh": auth_refresh,
}
