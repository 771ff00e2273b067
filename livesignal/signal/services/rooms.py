"""Live rooms: create, start, stop, delete, search, extends, members (PROTOCOL §3.2)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from livesignal.signal.backends.base import Tx
from livesignal.signal.model import events
from livesignal.signal.model.auth import Identity
from livesignal.signal.model.bounds import (
    MAX_COVER_URL_CHARS,
    MAX_NOTICE_CHARS,
    check_chars,
    check_extends,
    merge_extends,
)
from livesignal.signal.model.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    TooManyRequests,
    WrongState,
)
from livesignal.signal.model.events import Replay
from livesignal.signal.model.params import Page, paged
from livesignal.signal.model.records import Room, RoomStatus, User
from livesignal.signal.model.views import room_view, start_time, user_view
from livesignal.signal.services.context import ServiceContext
from livesignal.signal.services.presence import Hold, Joined, PresenceService
from livesignal.signal.services.relay import RelayService

MAX_TITLE = 200
STOPPED_BY_ANCHOR = "anchor"
STOPPED_BY_ANCHOR_TIMEOUT = "anchor_timeout"


@dataclass(frozen=True, slots=True)
class NewRoom:
    title: str
    notice: str = ""
    cover_url: str = ""
    extends: dict[str, str] | None = None
    start_at: int | None = None
    end_at: int | None = None
    publish_expire_at: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.title) <= MAX_TITLE:
            raise BadRequest(f"title must be 1..{MAX_TITLE} characters")
        check_chars("notice", self.notice, MAX_NOTICE_CHARS)
        check_chars("cover_url", self.cover_url, MAX_COVER_URL_CHARS)


def may_act_as_anchor(caller: Identity, room: Room) -> bool:
    return caller.user_id == room.anchor_id or caller.is_admin


class RoomService:
    def __init__(
        self, ctx: ServiceContext, presence: PresenceService, relays: RelayService
    ) -> None:
        self._ctx = ctx
        self._presence = presence
        self._relays = relays

    # --- reading -------------------------------------------------------------------------
    async def get(self, live_id: str) -> Room:
        room = await self._ctx.store.get_room(live_id)
        if room is None:
            raise NotFound("room not found")
        return room

    async def render(
        self, room: Room, viewer: Identity, anchor: User | None = None
    ) -> dict[str, Any]:
        ctx = self._ctx
        store = ctx.store
        now = ctx.clock.now()
        if anchor is None:
            # Every anchor was created by the request that created the room.
            anchor = await store.get_user(room.anchor_id) or User(room.anchor_id, 0, room.anchor_id)
        anchor_member = await store.get_member(room.anchor_id, room.live_id)
        pk_id = ""
        if room.relay_id:
            relay = await store.get_relay(room.relay_id)
            if relay is not None and relay.status.is_established:
                pk_id = relay.relay_id
        push_url = ""
        if may_act_as_anchor(viewer, room):
            expiry = ctx.urls.push_expiry(room.publish_expire_at, now)
            push_url = ctx.urls.push_url(room.live_id, expiry)
        return room_view(
            room,
            anchor=anchor,
            anchor_present=anchor_member is not None and anchor_member.is_present(now),
            online_count=await store.present_count(room.live_id, now),
            pk_id=pk_id,
            push_url=push_url,
            rtmp_url=ctx.urls.rtmp_play_url(room.live_id),
            flv_url=ctx.urls.flv_play_url(room.live_id),
            hls_url=ctx.urls.hls_play_url(room.live_id),
            sdk_fields=ctx.settings.compat.profile == "original",
        )

    async def _render_many(self, rooms: list[Room], viewer: Identity) -> list[dict[str, Any]]:
        anchors = await self._ctx.store.get_users({room.anchor_id for room in rooms})
        return [await self.render(room, viewer, anchors.get(room.anchor_id)) for room in rooms]

    async def info(self, caller: Identity, live_id: str) -> dict[str, Any]:
        return await self.render(await self.get(live_id), caller)

    async def list_live(self, caller: Identity, page: Page) -> dict[str, Any]:
        rooms = await self._ctx.store.rooms_with_status([RoomStatus.LIVE])
        rooms.sort(key=lambda room: room.start_order, reverse=True)
        return await self._render_page(rooms, page, caller)

    async def search(self, caller: Identity, keyword: str, page: Page) -> dict[str, Any]:
        rooms = await self._ctx.store.rooms_with_status([RoomStatus.CREATED, RoomStatus.LIVE])
        needle = keyword.strip().casefold()
        if needle:
            anchors = await self._ctx.store.get_users({room.anchor_id for room in rooms})

            def matches(room: Room) -> bool:
                anchor = anchors.get(room.anchor_id)
                nick = anchor.nick if anchor else ""
                haystacks = [room.title, room.live_id, room.anchor_id, nick]
                return any(needle in text.casefold() for text in haystacks)

            rooms = [room for room in rooms if matches(room)]
        live = sorted(
            (r for r in rooms if r.status == RoomStatus.LIVE),
            key=lambda r: r.start_order,
            reverse=True,
        )
        created = sorted(
            (r for r in rooms if r.status == RoomStatus.CREATED),
            key=lambda r: r.create_order,
            reverse=True,
        )
        return await self._render_page(live + created, page, caller)

    async def list_of_anchor(self, caller: Identity, page: Page) -> dict[str, Any]:
        """The rooms the caller anchors, any status (PROTOCOL §8.6): by start_time, newest
        first, ties broken by creation order (newest first)."""
        rooms = await self._ctx.store.rooms_of_anchor(caller.user_id)
        rooms.sort(key=lambda room: (start_time(room), room.create_order), reverse=True)
        return await self._render_page(rooms, page, caller)

    async def _render_page(self, rooms: list[Room], page: Page, caller: Identity) -> dict[str, Any]:
        result = paged(rooms, page)
        result["list"] = await self._render_many(result["list"], caller)
        return result

    async def user_list(self, caller: Identity, live_id: str, page: Page) -> dict[str, Any]:
        await self.get(live_id)
        store = self._ctx.store
        members = await store.present_members(live_id, self._ctx.clock.now())
        result = paged(members, page)
        shown = result["list"]
        users = await store.get_users(m.user_id for m in shown)
        result["list"] = [user_view(users[m.user_id]) for m in shown if m.user_id in users]
        return result

    # --- changing ------------------------------------------------------------------------
    async def create(self, caller: Identity, spec: NewRoom) -> dict[str, Any]:
        limits = self._ctx.settings.limits
        check_extends("extends", spec.extends, limits.extends_bytes)
        store = self._ctx.store
        chat_id = await store.next_id("chat")
        create_order = await store.next_id("room_order")

        async def step(tx: Tx) -> Room:
            max_open = limits.open_rooms_per_user
            if max_open and await tx.open_rooms(caller.user_id) >= max_open:
                raise TooManyRequests(
                    f"at most {max_open} rooms that are not ended per anchor: "
                    "stop or delete one first"
                )
            while True:
                live_id = f"live_{secrets.token_hex(8)}"
                if await tx.room(live_id) is None:
                    break
            room = Room(
                live_id=live_id,
                title=spec.title,
                anchor_id=caller.user_id,
                chat_id=chat_id,
                created_at=tx.now,
                notice=spec.notice,
                cover_url=spec.cover_url,
                extends=dict(spec.extends or {}),
                scheduled_start=spec.start_at,
                scheduled_end=spec.end_at,
                publish_expire_at=spec.publish_expire_at,
                create_order=create_order,
            )
            tx.put_room(room)
            return room

        room = (await store.transact(step)).result
        return await self.render(room, caller)

    async def start(self, caller: Identity, live_id: str, *, hold: Hold = "rest") -> dict[str, Any]:
        """Go live (idempotent); the anchor joins in the same step."""
        joined = await self.start_and_join(caller, live_id, hold=hold)
        return await self.joined_reply(joined, caller)

    def room_token(self, live_id: str, user_id: str) -> str:
        """The RTC room token the original SDKs join their RTC room with (PROTOCOL §3.4)."""
        return self._ctx.rtc_tokens.issue(live_id, user_id, self._ctx.clock.now())

    async def joined_reply(self, joined: Joined, viewer: Identity) -> dict[str, Any]:
        """What start and join answer: the room, and a room_token for the caller."""
        view = await self.render(joined.room, viewer)
        view["room_token"] = self.room_token(joined.room.live_id, viewer.user_id)
        return view

    async def start_and_join(
        self, caller: Identity, live_id: str, *, hold: Hold = "rest"
    ) -> Joined:
        start_order = await self._ctx.store.next_id("room_order")

        async def step(tx: Tx) -> tuple[Room, bool]:
            room = await tx.room(live_id)
            if room is None:
                raise NotFound("room not found")
            if not may_act_as_anchor(caller, room):
                raise Forbidden("only the room's anchor may start it")
            if room.status == RoomStatus.ENDED:
                raise WrongState("the room has ended")
            if room.status == RoomStatus.CREATED:
                room.status = RoomStatus.LIVE
                room.started_at = tx.now
                room.start_order = start_order
                tx.put_room(room)
                tx.emit(live_id, events.ROOM_STARTED, {})
                anchor = await tx.member(live_id, room.anchor_id)
                if anchor is None or not anchor.is_present(tx.now):
                    room.anchor_absent_since = tx.now  # an admin started it: the clock runs
            if caller.user_id != room.anchor_id:
                return room, False  # an admin acting as anchor does not become a member
            return room, await self._presence.join_in(tx, caller.user_id, room, hold)

        done = await self._ctx.store.transact(step)
        room, newly = done.result
        # Re-read: the visit counters (pv, uv) are applied by the commit, not to the draft.
        room = await self._ctx.store.get_room(live_id) or room
        return Joined(room=room, seq=done.seqs.get(live_id, 0), newly_present=newly)

    async def stop(self, caller: Identity, live_id: str) -> dict[str, Any]:
        async def step(tx: Tx) -> None:
            await self._end_in(tx, await self._room_in(tx, live_id), caller, STOPPED_BY_ANCHOR)

        await self._ctx.store.transact(step)
        return {}

    async def end_by_anchor_timeout(self, live_id: str, absent_since: float) -> bool:
        """End a live room whose anchor stayed away too long; False if that no longer holds."""
        close_after = self._ctx.settings.presence.anchor_offline_close

        async def step(tx: Tx) -> bool:
            room = await tx.room(live_id)
            if room is None or room.status != RoomStatus.LIVE:
                return False
            if room.anchor_absent_since != absent_since:
                return False  # the anchor came back (and maybe went again)
            anchor = await tx.member(live_id, room.anchor_id)
            if anchor is not None and anchor.is_present(tx.now):
                return False
            await self._end_in(
                tx, room, None, STOPPED_BY_ANCHOR_TIMEOUT, at=absent_since + close_after
            )
            return True

        return (await self._ctx.store.transact(step)).result

    async def _room_in(self, tx: Tx, live_id: str) -> Room:
        room = await tx.room(live_id)
        if room is None:
            raise NotFound("room not found")
        return room

    async def _end_in(
        self,
        tx: Tx,
        room: Room,
        caller: Identity | None,
        reason: str,
        *,
        at: float | None = None,
    ) -> None:
        """Stop a live room and end its relay, in the step `tx`."""
        if caller is not None and not may_act_as_anchor(caller, room):
            raise Forbidden("only the room's anchor may stop it")
        if room.status != RoomStatus.LIVE:
            raise WrongState("the room is not live")
        ended_at = at if at is not None else tx.now
        room.status = RoomStatus.ENDED
        room.ended_at = ended_at
        room.anchor_absent_since = None
        tx.put_room(room)
        tx.emit(room.live_id, events.ROOM_STOPPED, {"reason": reason})
        await self._relays.end_for_room_in(tx, room, at=ended_at)

    async def delete(self, caller: Identity, live_id: str) -> dict[str, Any]:
        """Stop (if live), end the relay, delete: one step, so nothing can start in between."""

        async def step(tx: Tx) -> None:
            room = await self._room_in(tx, live_id)
            if not may_act_as_anchor(caller, room):
                raise Forbidden("only the room's anchor may delete it")
            if room.status == RoomStatus.LIVE:
                await self._end_in(tx, room, caller, STOPPED_BY_ANCHOR)
            else:
                await self._relays.end_for_room_in(tx, room, at=tx.now)
            # Sockets still attached get room.deleted and detach themselves; no member.left.
            tx.emit(live_id, events.ROOM_DELETED, {})
            tx.drop_room(room)

        await self._ctx.store.transact(step)
        return {}

    async def update_extends(
        self, caller: Identity, live_id: str, extends: dict[str, str]
    ) -> dict[str, Any]:
        limit = self._ctx.settings.limits.extends_bytes
        check_extends("extends", extends, limit)

        async def step(tx: Tx) -> None:
            room = await self._room_in(tx, live_id)
            if not may_act_as_anchor(caller, room):
                raise Forbidden("only the room's anchor may change its extends")
            room.extends = merge_extends("extends", room.extends, extends, limit)
            tx.put_room(room)
            tx.emit(live_id, events.ROOM_EXTENDS, {"extends": dict(room.extends)})

        await self._ctx.store.transact(step)
        return {}

    # --- history (PROTOCOL §4.5) -----------------------------------------------------------
    async def check_resume(self, live_id: str, since: int) -> None:
        """A socket may resume the room from `since`: 404 for a room that is gone (not "since
        is too high"), 400 for a seq the room never reached."""
        await self.get(live_id)
        if since > await self._ctx.broker.current_seq(live_id):
            raise BadRequest("since is above the room's current seq")

    async def replay(self, live_id: str, since: int) -> Replay:
        """The room's held events after `since`, or recovered=False if one of them is gone."""
        return await self._ctx.broker.replay(live_id, since)

    # --- membership ----------------------------------------------------------------------
    async def join(self, caller: Identity, live_id: str, *, hold: Hold = "rest") -> Joined:
        return await self._presence.join(caller.user_id, live_id, hold=hold)

    async def attach_reply(self, joined: Joined, viewer: Identity) -> dict[str, Any]:
        """What a socket's room.join / room.start answers: the room, its seq as of the join,
        and its relay at status 1-4 (or null)."""
        room = await self._ctx.store.get_room(joined.room.live_id) or joined.room
        relay = None
        if room.relay_id:
            found = await self._ctx.store.get_relay(room.relay_id)
            if found is not None and found.status.is_established:
                relay = self._relays.view(found)
        view = await self.joined_reply(Joined(room, joined.seq, joined.newly_present), viewer)
        return {**view, "seq": joined.seq, "relay": relay}
