"""The one operation table: every operation once, exposed by REST and by WebSocket alike.

A handler takes the caller and its parameters (path, query and body fields merged, or a
frame's `data`), validates every parameter first (400 before 404/403/601) and calls a service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from livesignal.signal.model.auth import Identity
from livesignal.signal.model.errors import BadRequest
from livesignal.signal.model.params import Params
from livesignal.signal.services.rooms import NewRoom
from livesignal.signal.services.wiring import Services


@dataclass(frozen=True, slots=True)
class Call:
    caller: Identity
    params: Params
    via_socket: bool = False  # the few rules that differ by transport read this


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
    return await s.rooms.start(c.caller, c.params.text("live_id"))


async def room_stop(s: Services, c: Call) -> dict[str, Any]:
    return await s.rooms.stop(c.caller, c.params.text("live_id"))


async def room_delete(s: Services, c: Call) -> dict[str, Any]:
    return await s.rooms.delete(c.caller, c.params.text("live_id"))


async def room_search(s: Services, c: Call) -> dict[str, Any]:
    keyword = c.params.opt_text("keyword") or ""
    return await s.rooms.search(c.caller, keyword, c.params.page())


async def room_list(s: Services, c: Call) -> dict[str, Any]:
    return await s.rooms.list_live(c.caller, c.params.page())


async def room_join(s: Services, c: Call) -> dict[str, Any]:
    live_id = c.params.text("live_id")
    joined = await s.rooms.join(c.caller, live_id)
    return await s.rooms.joined_reply(joined, c.caller)


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


OPERATIONS: dict[str, Handler] = {
    "room.create": room_create,
    "room.info": room_info,
    "room.start": room_start,
    "room.stop": room_stop,
    "room.delete": room_delete,
    "room.search": room_search,
    "room.list": room_list,
    "room.join": room_join,
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
}
