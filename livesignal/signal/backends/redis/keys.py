"""Every Redis key and channel livesignal uses, in one place.

All keys start with `ls:` and name what they belong to, so `redis-cli --scan --pattern
'ls:room:<live_id>*'` shows everything of one room. Records are hashes {v: version, d: JSON}.
"""

from __future__ import annotations

PREFIX = "ls:"


def text(value: bytes | str) -> str:
    """A value read back from Redis as text (the client answers bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def user(user_id: str) -> str:
    return f"{PREFIX}user:{user_id}"


def user_at(user_id: str) -> str:
    """The room the user is a member of: {v, d: live_id}."""
    return f"{PREFIX}user:{user_id}:at"


def im_user(im_userid: int) -> str:
    """im_userid -> user_id (for GET /client/user/imusers)."""
    return f"{PREFIX}imuser:{im_userid}"


def room(live_id: str) -> str:
    return f"{PREFIX}room:{live_id}"


def room_members(live_id: str) -> str:
    """zset user_id -> join time."""
    return f"{PREFIX}room:{live_id}:members"


def room_present(live_id: str) -> str:
    """zset user_id -> until when the member is present (inf while a socket holds it), so
    that a room's online count is one ZCOUNT instead of reading every member."""
    return f"{PREFIX}room:{live_id}:present"


def member(live_id: str, user_id: str) -> str:
    return f"{PREFIX}room:{live_id}:member:{user_id}"


def room_pv(live_id: str) -> str:
    return f"{PREFIX}room:{live_id}:pv"


def room_uv(live_id: str) -> str:
    return f"{PREFIX}room:{live_id}:uv"


def room_visitors(live_id: str) -> str:
    return f"{PREFIX}room:{live_id}:visitors"


def room_seq(live_id: str) -> str:
    return f"{PREFIX}room:{live_id}:seq"


def room_events(live_id: str) -> str:
    """The room's event history: a stream whose entry ids are 0-<seq>."""
    return f"{PREFIX}room:{live_id}:events"


def rooms_with_status(status: int) -> str:
    return f"{PREFIX}rooms:status:{status}"


def anchor_open_rooms(anchor_id: str) -> str:
    return f"{PREFIX}user:{anchor_id}:open_rooms"


def anchor_rooms(anchor_id: str) -> str:
    """Every room the user anchors, any status, until deleted (GET .../room/list/anchor)."""
    return f"{PREFIX}user:{anchor_id}:rooms"


def relay(relay_id: str) -> str:
    return f"{PREFIX}relay:{relay_id}"


VERSIONS = f"{PREFIX}versions"  # every record write takes its version from this counter
ACTIVE_RELAYS = f"{PREFIX}relays:active"
REST_DEADLINES = f"{PREFIX}presence:deadlines"  # zset pair(live_id, user_id) -> deadline
NODES = f"{PREFIX}nodes"  # zset node_id -> lease end


def node_holds(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}:holds"


def counter(name: str) -> str:
    return f"{PREFIX}counter:{name}"


def room_channel(live_id: str) -> str:
    return f"{PREFIX}events:room:{live_id}"


def user_channel(user_id: str) -> str:
    return f"{PREFIX}events:user:{user_id}"


# --- outside the signalling state ------------------------------------------------------------


def secret(name: str) -> str:
    """A secret the config left empty, made once and shared by every node (e.g. rtc.secret_key)."""
    return f"{PREFIX}secret:{name}"


def media_room(room_id: str) -> str:
    """Which node holds the room's media: "<node id> <address>", with a lease."""
    return f"{PREFIX}media:room:{room_id}"


def media_stream(stream: str) -> str:
    """The room a WeChat push stream belongs to (nginx's on_publish may reach any node)."""
    return f"{PREFIX}media:stream:{stream}"
