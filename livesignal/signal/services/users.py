"""User profiles: created on first sight, stable im_userid, merge updates."""

from __future__ import annotations

from typing import Any

from livesignal.signal.backends.base import Tx
from livesignal.signal.model.auth import Identity
from livesignal.signal.model.bounds import (
    MAX_AVATAR_CHARS,
    MAX_NICK_CHARS,
    check_chars,
    check_extends,
    merge_extends,
)
from livesignal.signal.model.errors import NotFound
from livesignal.signal.model.records import User
from livesignal.signal.model.views import user_view
from livesignal.signal.services.context import ServiceContext

MAX_LISTED_USERS = 100
FIRST_IM_USERID = 1_000_000


class UserService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._known: set[str] = set()  # users this process has seen exist: skip the store

    async def ensure(self, user_id: str) -> None:
        """Create the user on its first authenticated request."""
        if user_id in self._known:
            return
        await self.ensure_user(user_id)
        self._known.add(user_id)

    async def ensure_user(self, user_id: str) -> User:
        """The user, created on first sight with nick = user_id and a fresh im_userid."""
        store = self._ctx.store
        found = await store.get_user(user_id)
        if found is not None:
            return found
        im_userid = FIRST_IM_USERID - 1 + await store.next_id("im_userid")

        async def step(tx: Tx) -> User:
            user = await tx.user(user_id)
            if user is None:  # not created by another request meanwhile
                user = User(user_id=user_id, im_userid=im_userid, nick=user_id)
                tx.put_user(user)
            return user

        return (await store.transact(step)).result

    async def get(self, user_id: str) -> User:
        user = await self._ctx.store.get_user(user_id)
        if user is None:
            raise NotFound("user not found")
        return user

    async def profile(self, caller: Identity) -> dict[str, Any]:
        view = user_view(await self.ensure_user(caller.user_id))
        if self._ctx.settings.compat.profile == "original":
            view["im_password"] = ""  # what the SDKs log in to IM with; livesignal runs no IM
        return view

    async def update(
        self,
        caller: Identity,
        nick: str | None,
        avatar: str | None,
        extends: dict[str, str] | None,
    ) -> dict[str, Any]:
        limit = self._ctx.settings.limits.extends_bytes
        check_chars("nick", nick, MAX_NICK_CHARS)
        check_chars("avatar", avatar, MAX_AVATAR_CHARS)
        check_extends("extends", extends, limit)

        def apply(user: User) -> None:
            if nick is not None:
                user.nick = nick
            if avatar is not None:
                user.avatar = avatar
            if extends:
                user.extends = merge_extends("extends", user.extends, extends, limit)

        await self.ensure_user(caller.user_id)

        async def step(tx: Tx) -> User:
            user = await tx.user(caller.user_id)
            if user is None:
                raise NotFound("user not found")
            apply(user)
            tx.put_user(user)
            return user

        return user_view((await self._ctx.store.transact(step)).result)

    async def show(self, user_id: str) -> dict[str, Any]:
        return user_view(await self.get(user_id))

    async def show_by_im_ids(self, im_ids: list[int]) -> dict[str, Any]:
        """The users with those im_userids, in the order asked, unknown ones skipped."""
        found = await self._ctx.store.users_by_im_ids(im_ids)
        return {"list": [user_view(found[i]) for i in dict.fromkeys(im_ids) if i in found]}

    async def show_many(self, user_ids: list[str]) -> dict[str, Any]:
        """The known users among `user_ids`, in the order asked, unknown ones skipped."""
        found = await self._ctx.store.get_users(user_ids)
        seen: set[str] = set()
        listed = []
        for user_id in user_ids:
            if user_id in found and user_id not in seen:
                seen.add(user_id)
                listed.append(user_view(found[user_id]))
        return {"list": listed}
