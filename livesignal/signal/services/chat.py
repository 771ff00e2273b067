"""Room chat: present members send, everyone joined to the room receives `chat.message`."""

from __future__ import annotations

from typing import Any

from livesignal.signal.backends.base import Tx
from livesignal.signal.model import events
from livesignal.signal.model.auth import Identity
from livesignal.signal.model.bounds import check_chat_text
from livesignal.signal.model.errors import Forbidden, NotFound
from livesignal.signal.services.context import ServiceContext
from livesignal.signal.services.rates import UserRates


class ChatService:
    def __init__(self, ctx: ServiceContext, rates: UserRates) -> None:
        self._ctx = ctx
        self._rates = rates

    async def send(self, caller: Identity, live_id: str, text: str) -> dict[str, Any]:
        check_chat_text(text)
        self._rates.admit_chat(caller)

        async def step(tx: Tx) -> None:
            room, member = await tx.room_and_member(live_id, caller.user_id)
            if room is None:
                raise NotFound("room not found")
            if member is None or not member.is_present(tx.now):
                raise Forbidden("only present members may chat")
            user = await tx.user(caller.user_id)
            nick = user.nick if user is not None else caller.user_id
            data = {"user_id": caller.user_id, "nick": nick, "text": text, "ts": int(tx.now * 1000)}
            tx.emit(live_id, events.CHAT_MESSAGE, data)

        done = await self._ctx.store.transact(step)
        return {"seq": done.events[0].seq}
