"""Room chat: present members send, everyone joined to the room receives `chat.message`."""

from __future__ import annotations

from typing import Any

from livesignal.signal import events
from livesignal.signal.auth import Identity
from livesignal.signal.bounds import check_chat_text
from livesignal.signal.context import ServiceContext
from livesignal.signal.errors import Forbidden, NotFound
from livesignal.signal.rates import UserRates


class ChatService:
    def __init__(self, ctx: ServiceContext, rates: UserRates) -> None:
        self._ctx = ctx
        self._rates = rates

    async def send(self, caller: Identity, live_id: str, text: str) -> dict[str, Any]:
        check_chat_text(text)
        self._rates.admit_chat(caller)
        store = self._ctx.store
        if await store.get_room(live_id) is None:
            raise NotFound("room not found")
        now = self._ctx.clock.now()
        member = await store.get_member(caller.user_id, live_id)
        if member is None or not member.is_present(now):
            raise Forbidden("only present members may chat")
        user = await store.ensure_user(caller.user_id)
        data = {"user_id": user.user_id, "nick": user.nick, "text": text, "ts": int(now * 1000)}
        event = await self._ctx.broker.publish_room(live_id, events.CHAT_MESSAGE, data)
        return {"seq": event.seq}
