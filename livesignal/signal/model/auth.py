"""Credentials: client JWTs, Qiniu MAC for /server/*, RTC room tokens and signed stream URLs.

All base64 here is URL-safe with `=` padding (PROTOCOL §2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from livesignal.settings import RtcSettings, StreamSettings
from livesignal.signal.model.errors import TokenExpired, Unauthorized

ADMIN_ROLE = "admin"
MAX_EXP = 2**53  # beyond it an exp is no unix time, and would not fit in a JSON reply


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def hmac_sha1_b64(key: str, message: str | bytes) -> str:
    raw = message.encode() if isinstance(message, str) else message
    return b64(hmac.new(key.encode(), raw, hashlib.sha1).digest())


# --- client tokens -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request or socket acts as; taken from a verified client token."""

    user_id: str
    app_id: str = ""
    device_id: str = ""
    role: str = ""
    exp: int = 0

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN_ROLE


class TokenCodec:
    """Issues and verifies client JWTs (HS256) with the original server's claim names.

    Verified tokens are cached (bounded LRU) so a busy heartbeat path skips the HMAC; the
    expiry is still checked on every use.
    """

    _CACHE_SIZE = 4096

    def __init__(self, secret: str, default_ttl: int) -> None:
        self._secret = secret
        self.default_ttl = default_ttl
        self._cache: OrderedDict[str, Identity] = OrderedDict()

    def issue(
        self,
        user_id: str,
        now: float,
        *,
        ttl: int | None = None,
        role: str = "",
        app_id: str = "",
        device_id: str = "",
        expires_at: int | None = None,
    ) -> tuple[str, int]:
        exp = expires_at if expires_at is not None else int(now) + (ttl or self.default_ttl)
        claims = {
            "UserId": user_id,
            "AppId": app_id,
            "DeviceId": device_id,
            "Role": role,
            "exp": exp,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256"), exp

    def rekey(self, secret: str) -> None:
        """Use another secret from now on (a cluster's shared one, adopted before serving)."""
        self._secret = secret
        self._cache.clear()

    def verify(self, token: str, now: float) -> Identity:
        """The identity in `token`; Unauthorized (401) if invalid, TokenExpired (499) if old."""
        cached = self._cache.get(token)
        if cached is None:
            cached = self._decode(token)
            self._cache[token] = cached
            if len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(token)
        if cached.exp <= now:
            raise TokenExpired()
        return cached

    def _decode(self, token: str) -> Identity:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                # A token without exp would never expire: refused (PROTOCOL §2).
                options={"verify_exp": False, "require": ["UserId", "exp"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        user_id = claims.get("UserId")
        if not isinstance(user_id, str) or not user_id:
            raise Unauthorized("token has no UserId")
        exp = claims["exp"]
        if not isinstance(exp, int | float) or isinstance(exp, bool) or not 0 < exp < MAX_EXP:
            raise Unauthorized("token exp is not a unix time")
        return Identity(
            user_id=user_id,
            app_id=str(claims.get("AppId") or ""),
            device_id=str(claims.get("DeviceId") or ""),
            role=str(claims.get("Role") or ""),
            exp=int(exp),
        )


def bearer_token(header: str | None) -> str | None:
    """The token of an Authorization header value, with or without 'Bearer '."""
    if not header:
        return None
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


# --- Qiniu MAC (server-to-server) -----------------------------------------------------------


def qiniu_signing_string(
    method: str,
    path: str,
    query: str,
    host: str,
    content_type: str | None,
    body: bytes,
) -> bytes:
    """S = "<METHOD> <path>[?<query>]\\nHost: <host>[\\nContent-Type: <ct>]\\n\\n[<body>]"."""
    text = f"{method} {path}"
    if query:
        text += f"?{query}"
    text += f"\nHost: {host}"
    if content_type:
        text += f"\nContent-Type: {content_type}"
    text += "\n\n"
    data = text.encode()
    if body and content_type != "application/octet-stream":
        data += body
    return data


def qiniu_authorization(access_key: str, secret_key: str, signing_string: bytes) -> str:
    return f"Qiniu {access_key}:{hmac_sha1_b64(secret_key, signing_string)}"


def verify_qiniu(
    header: str | None, access_key: str, secret_key: str, signing_string: bytes
) -> bool:
    if not header:
        return False
    expected = qiniu_authorization(access_key, secret_key, signing_string)
    return hmac.compare_digest(header.strip().encode(), expected.encode())


# --- RTC room tokens (relay_token; the media gateway's Token header) ------------------------


@dataclass(frozen=True, slots=True)
class RtcGrant:
    app_id: str
    room_name: str
    user_id: str
    expire_at: int
    permission: str


class RtcTokenCodec:
    def __init__(self, settings: RtcSettings) -> None:
        self._settings = settings

    def issue(self, room_name: str, user_id: str, now: float) -> str:
        payload = {
            "appId": self._settings.app_id,
            "roomName": room_name,
            "userId": user_id,
            "expireAt": int(now) + self._settings.token_ttl,
            "permission": "user",
        }
        enc = b64(orjson.dumps(payload))
        sign = hmac_sha1_b64(self._settings.secret_key, enc)
        return f"{self._settings.access_key}:{sign}:{enc}"

    def verify(self, token: str, now: float) -> RtcGrant:
        """The grant in `token`; ValueError if malformed, forged, for another key or expired."""
        parts = token.strip().split(":")
        if len(parts) != 3:
            raise ValueError("token is not <access_key>:<sign>:<enc>")
        access_key, sign, enc = parts
        if access_key != self._settings.access_key:
            raise ValueError("unknown access key")
        expected = hmac_sha1_b64(self._settings.secret_key, enc)
        if not hmac.compare_digest(sign.encode(), expected.encode()):
            raise ValueError("bad signature")
        try:
            payload = orjson.loads(base64.urlsafe_b64decode(enc.encode()))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError("undecodable payload") from exc
        if not isinstance(payload, dict):
            raise ValueError("payload is not an object")
        expire_at = payload.get("expireAt")
        if not isinstance(expire_at, int) or expire_at <= now:
            raise ValueError("token expired")
        return RtcGrant(
            app_id=str(payload.get("appId", "")),
            room_name=str(payload.get("roomName", "")),
            user_id=str(payload.get("userId", "")),
            expire_at=expire_at,
            permission=str(payload.get("permission", "")),
        )


# --- stream URLs (Qiniu Pili signing rules) -------------------------------------------------

# Unix seconds as a push URL's expiry: 12 digits reach the year 33658. A longer text is refused
# before int() (which raises past 4,300 digits) and never means a sane expiry anyway.
MAX_EXPIRY_DIGITS = 12


def _unix_seconds(text: str) -> int | None:
    """The expiry a push URL carries, or None unless it is 1..12 ASCII digits.

    str.isdigit alone would let "²" or "١٢٣" through to int(), which reads the second and
    raises on the first.
    """
    if len(text) > MAX_EXPIRY_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def _same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of any two strings (a form value may hold any character)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


class StreamUrls:
    def __init__(self, stream: StreamSettings, rtc: RtcSettings) -> None:
        self._stream = stream
        self._rtc = rtc
        self.app = stream.publish_base.rstrip("/").rsplit("/", 1)[-1]

    def push_url(self, stream_name: str, expire_at: int) -> str:
        base = f"{self._stream.publish_base.rstrip('/')}/{stream_name}"
        security = self._stream.security
        if security == "none":
            return base
        if security == "static":
            return f"{base}?key={self._stream.publish_key}"
        expire_field = self._expire_field()
        token = self._push_token(stream_name, expire_at)
        return f"{base}?{expire_field}={expire_at}&token={token}"

    def _expire_field(self) -> str:
        return "expire" if self._stream.security == "expiry" else "e"

    def _push_token(self, stream_name: str, expire_at: int) -> str:
        """The token of a push URL under `expiry` or `expiry_sk` security."""
        path = f"/{self.app}/{stream_name}?{self._expire_field()}={expire_at}"
        path_bytes = path.encode("utf-8", "surrogatepass")  # any stream name a form can hold
        if self._stream.security == "expiry":
            return hmac_sha1_b64(self._stream.publish_key, path_bytes)
        return f"{self._rtc.access_key}:{hmac_sha1_b64(self._rtc.secret_key, path_bytes)}"

    def push_expiry(self, publish_expire_at: int | None, now: float) -> int:
        if publish_expire_at is not None and publish_expire_at > now:
            return publish_expire_at
        return int(now) + self._stream.publish_ttl

    def verify_push(self, app: str, stream_name: str, args: dict[str, str], now: float) -> bool:
        """Whether a push to /<app>/<stream_name> with query `args` carries a valid signature.

        False, never an exception, for any strings a client can put in the form.
        """
        if app != self.app:
            return False
        security = self._stream.security
        if security == "none":
            return True
        if security == "static":
            return _same_secret(args.get("key", ""), self._stream.publish_key)
        expire_at = _unix_seconds(args.get(self._expire_field(), ""))
        if expire_at is None or expire_at <= now:
            return False
        return _same_secret(args.get("token", ""), self._push_token(stream_name, expire_at))

    def rtmp_play_url(self, stream_name: str) -> str:
        return f"{self._stream.rtmp_play_base.rstrip('/')}/{stream_name}"

    def flv_play_url(self, stream_name: str) -> str:
        return f"{self._stream.flv_play_base.rstrip('/')}/{stream_name}.flv"

    def hls_play_url(self, stream_name: str) -> str:
        return f"{self._stream.hls_play_base.rstrip('/')}/{stream_name}.m3u8"
