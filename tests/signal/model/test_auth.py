"""RTC room tokens (PROTOCOL §3.4) as the codec issues and verifies them: what the media
gateway will accept."""

from __future__ import annotations

import base64

import orjson
import pytest

from livesignal.settings import RtcSettings
from livesignal.signal.model.auth import RtcTokenCodec


def test_rtc_token_round_trip_and_tampering() -> None:
    codec = RtcTokenCodec(RtcSettings(app_id="app", access_key="ak1", secret_key="sk1"))
    token = codec.issue("live_x", "alice", 1_000)
    grant = codec.verify(token, 1_000)
    assert (grant.app_id, grant.room_name, grant.user_id, grant.permission) == (
        "app",
        "live_x",
        "alice",
        "user",
    )
    assert grant.expire_at == 1_000 + 86400
    access_key, sign, enc = token.split(":")
    forged_payload = orjson.loads(base64.urlsafe_b64decode(enc))
    forged_payload["roomName"] = "live_other"
    forged_enc = base64.urlsafe_b64encode(orjson.dumps(forged_payload)).decode()
    for bad in (
        f"{access_key}:{sign}:{forged_enc}",
        f"other-ak:{sign}:{enc}",
        f"{access_key}:{sign}",
        "garbage",
    ):
        with pytest.raises(ValueError):
            codec.verify(bad, 1_000)
    with pytest.raises(ValueError):
        codec.verify(token, 1_000 + 86400)
