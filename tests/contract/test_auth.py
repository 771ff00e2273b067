"""PROTOCOL §2, black box: client tokens, GET /server/auth/token signed with Qiniu MAC and the
credentials it mints, and the user object.

Signatures are computed here by hand (hmac/hashlib/base64) from the §2 formula.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator

import aiohttp
import jwt
import orjson
import pytest

from livesignal.client import SignalClient
from tests.conftest import JWT_SECRET, Harness, HarnessFactory
from tests.contract.helpers import check_user
from tests.rest_helpers import assert_error, assert_ok

AK, SK = "server-ak", "server-sk"
HOST = "api.example.com"


def unsigned_token(claims: dict[str, object]) -> str:
    """A JWT with "alg": "none" and no signature: must never be accepted."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# --- client tokens (Authorization on REST; /ws is tests/signal/ws/test_connection.py) -------------


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "Bearer ",
        jwt.encode({"UserId": "alice", "exp": 4_000_000_000}, "another-secret-" * 3, "HS256"),
        jwt.encode({"AppId": "x", "exp": 4_000_000_000}, JWT_SECRET, "HS256"),
        unsigned_token({"UserId": "alice", "exp": 4_000_000_000}),
    ],
    ids=["garbage", "empty-bearer", "wrong-secret", "no-user-id", "alg-none"],
)
async def test_invalid_token_is_401(harness: Harness, token: str) -> None:
    reply = await harness.call("GET", "/client/user/profile", token=token)
    assert_error(reply, 401, 401)


async def test_expired_token_is_http_401_code_499(harness: Harness) -> None:
    token = harness.token("alice", ttl=60)
    assert_ok(await harness.call("GET", "/client/user/profile", token=token))
    harness.advance(61)
    reply = await harness.call("GET", "/client/user/profile", token=token)
    assert_error(reply, 401, 499)


async def test_token_accepted_with_and_without_bearer(harness: Harness) -> None:
    token = harness.token("alice")
    for header in (token, f"Bearer {token}", f"bearer {token}"):
        reply = await harness.call("GET", "/client/user/profile", token=header)
        assert assert_ok(reply)["user_id"] == "alice"


async def test_original_server_claim_names_are_accepted(harness: Harness) -> None:
    """A token made by the original server (its claim names, our secret) keeps working."""
    exp = int(harness.clock.now()) + 3600
    claims = {"UserId": "legacy", "AppId": "app1", "DeviceId": "dev1", "Role": "", "exp": exp}
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    assert (
        assert_ok(await harness.call("GET", "/client/user/profile", token=token))["user_id"]
        == "legacy"
    )


async def test_harness_token_carries_the_documented_claims(harness: Harness) -> None:
    token = harness.token("alice", role="admin", ttl=100)
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["UserId"] == "alice"
    assert claims["Role"] == "admin"
    assert claims["exp"] == int(harness.clock.now()) + 100
    assert {"AppId", "DeviceId"} <= set(claims)


async def test_a_token_without_exp_is_refused(harness: Harness) -> None:
    eternal = jwt.encode({"UserId": "alice", "Role": ""}, JWT_SECRET, algorithm="HS256")
    reply = await harness.call("GET", "/client/user/profile", token=eternal)
    assert_error(reply, 401, 401)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await harness.session.ws_connect(f"{harness.ws_url}?token={eternal}")
    assert refused.value.status == 401
    with pytest.raises(Exception):  # noqa: B017 - the client's own error for a refused upgrade
        await SignalClient.connect(harness.ws_url, eternal)


async def test_a_token_whose_exp_is_no_unix_time_is_refused(harness: Harness) -> None:
    huge = jwt.encode({"UserId": "alice", "exp": 10**30}, JWT_SECRET, algorithm="HS256")
    assert_error(await harness.call("GET", "/client/user/profile", token=huge), 401, 401)


# --- GET /server/auth/token, signed with Qiniu MAC ------------------------------------------------


@pytest.fixture
async def h(make_harness: HarnessFactory) -> Harness:
    return await make_harness({"auth": {"server_access_key": AK, "server_secret_key": SK}})


def qiniu(
    method: str,
    path_qs: str,
    *,
    host: str = HOST,
    content_type: str | None = None,
    body: bytes = b"",
    access_key: str = AK,
    secret_key: str = SK,
) -> str:
    """Authorization: Qiniu <AK>:<urlsafe_b64(HMAC-SHA1(SK, S))>, S by the §2 formula."""
    signing = f"{method} {path_qs}\nHost: {host}"
    if content_type:
        signing += f"\nContent-Type: {content_type}"
    signing += "\n\n"
    data = signing.encode()
    if body and content_type != "application/octet-stream":
        data += body
    digest = hmac.new(secret_key.encode(), data, hashlib.sha1).digest()
    return f"Qiniu {access_key}:{base64.urlsafe_b64encode(digest).decode()}"


def test_qiniu_known_vector() -> None:
    """The formula above against a fixed answer, so that the helper itself is pinned."""
    header = qiniu(
        "GET",
        "/server/auth/token?app_id=demo&user_id=u-1&device_id=d-9",
        access_key="vector-ak",
        secret_key="vector-sk",
    )
    assert header == "Qiniu vector-ak:oMq4iAOVax6p96oUld5STixjq9s="


async def test_issue_token(h: Harness) -> None:
    path = "/server/auth/token?app_id=demo&user_id=u-1&device_id=d-9"
    reply = await h.call("GET", path, headers={"Host": HOST, "Authorization": qiniu("GET", path)})
    data = assert_ok(reply)
    assert set(data) == {"access_token", "expires_at"}
    assert data["expires_at"] == int(h.clock.now()) + h.settings.auth.token_ttl
    claims = jwt.decode(
        data["access_token"], JWT_SECRET, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert (claims["UserId"], claims["AppId"], claims["DeviceId"], claims["exp"]) == (
        "u-1",
        "demo",
        "d-9",
        data["expires_at"],
    )
    # The token works on the client API, and the user now exists.
    profile = await h.call("GET", "/client/user/profile", token=data["access_token"])
    assert assert_ok(profile)["user_id"] == "u-1"


async def test_issue_token_with_expires_at(h: Harness) -> None:
    expires_at = int(h.clock.now()) + 90
    path = f"/server/auth/token?user_id=u-2&expires_at={expires_at}"
    reply = await h.call("GET", path, headers={"Host": HOST, "Authorization": qiniu("GET", path)})
    data = assert_ok(reply)
    assert data["expires_at"] == expires_at
    assert_ok(await h.call("GET", "/client/user/profile", token=data["access_token"]))
    h.advance(90)
    expired = await h.call("GET", "/client/user/profile", token=data["access_token"])
    assert_error(expired, 401, 499)


async def test_signature_covers_a_json_body(h: Harness) -> None:
    path = "/server/auth/token?user_id=u-3"
    body = b'{"note": "signed"}'
    good = qiniu("GET", path, content_type="application/json", body=body)
    headers = {"Host": HOST, "Authorization": good, "Content-Type": "application/json"}
    assert_ok(await h.call("GET", path, data=body, headers=headers))
    # The same signature over a different body does not verify.
    assert_error(await h.call("GET", path, data=b'{"note": "forged"}', headers=headers), 401)
    # Signing without the body is wrong when the body is not octet-stream.
    headers["Authorization"] = qiniu("GET", path, content_type="application/json")
    assert_error(await h.call("GET", path, data=body, headers=headers), 401)


async def test_octet_stream_body_is_not_signed(h: Harness) -> None:
    path = "/server/auth/token?user_id=u-4"
    ct = "application/octet-stream"
    headers = {
        "Host": HOST,
        "Authorization": qiniu("GET", path, content_type=ct),
        "Content-Type": ct,
    }
    assert_ok(await h.call("GET", path, data=b"\x00\x01 any bytes", headers=headers))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Qiniu server-ak:",
        qiniu("GET", "/server/auth/token?user_id=someone-else"),
        qiniu("GET", "/server/auth/token?user_id=u-5", secret_key="wrong-sk"),
        qiniu("GET", "/server/auth/token?user_id=u-5", access_key="wrong-ak"),
        qiniu("GET", "/server/auth/token?user_id=u-5", host="other.example.com"),
        qiniu("POST", "/server/auth/token?user_id=u-5"),
        qiniu("GET", "/server/auth/token?user_id=u-5").replace("Qiniu ", "Bearer "),
    ],
    ids=[
        "absent",
        "empty",
        "no-sign",
        "other-query",
        "wrong-sk",
        "wrong-ak",
        "other-host",
        "other-method",
        "wrong-scheme",
    ],
)
async def test_bad_signature_is_401(h: Harness, authorization: str | None) -> None:
    path = "/server/auth/token?user_id=u-5"
    headers = {"Host": HOST}
    if authorization is not None:
        headers["Authorization"] = authorization
    assert_error(await h.call("GET", path, headers=headers), 401)


async def test_401_before_400(h: Harness) -> None:
    path = "/server/auth/token?app_id=demo"
    assert_error(await h.call("GET", path, headers={"Host": HOST, "Authorization": "x"}), 401)
    assert_error(
        await h.call("GET", path, headers={"Host": HOST, "Authorization": qiniu("GET", path)}),
        400,
    )


@pytest.mark.parametrize(
    "query",
    [
        "app_id=demo",
        "user_id=",
        "user_id=u&expires_at=soon",
        "user_id=u&expires_at=1.5",
        "user_id=u&expires_at=1000",
        "user_id=u&expires_at=99999999999999999999999",
    ],
    ids=[
        "no-user-id",
        "empty-user-id",
        "expires-word",
        "expires-float",
        "expires-past",
        "expires-beyond-64-bit",
    ],
)
async def test_bad_parameters_are_400(h: Harness, query: str) -> None:
    path = f"/server/auth/token?{query}"
    reply = await h.call("GET", path, headers={"Host": HOST, "Authorization": qiniu("GET", path)})
    assert_error(reply, 400)


async def test_server_api_disabled_without_keys_is_403(harness: Harness) -> None:
    path = "/server/auth/token?user_id=u-6"
    for authorization in (qiniu("GET", path, access_key="", secret_key=""), qiniu("GET", path)):
        reply = await harness.call(
            "GET", path, headers={"Host": HOST, "Authorization": authorization}
        )
        assert_error(reply, 403)


async def test_server_token_reply_echoes_x_reqid(h: Harness) -> None:
    path = "/server/auth/token?user_id=u-7"
    reply = await h.call(
        "GET",
        path,
        headers={"Host": HOST, "Authorization": qiniu("GET", path), "X-Reqid": "srv-1"},
    )
    assert_ok(reply)
    assert (reply.body["request_id"], reply.headers["X-Reqid"]) == ("srv-1", "srv-1")


@pytest.mark.parametrize("size", [1, 60_000])
async def test_signature_covers_a_body_of_any_size_up_to_64_kib(h: Harness, size: int) -> None:
    path = "/server/auth/token?user_id=u-8"
    body = orjson.dumps({"pad": "p" * size})
    headers = {
        "Host": HOST,
        "Content-Type": "application/json",
        "Authorization": qiniu("GET", path, content_type="application/json", body=body),
    }
    assert_ok(await h.call("GET", path, data=body, headers=headers))


async def test_signature_covers_a_body_that_arrives_in_pieces(h: Harness) -> None:
    """The server must verify the whole body, not the part that has arrived so far."""
    path = "/server/auth/token?user_id=u-9"
    body = orjson.dumps({"pad": "p" * 30_000})

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 5_000):
            yield body[start : start + 5_000]
            # A full round trip on another connection: the server has read this piece
            # before the next one is sent.
            assert_ok(await h.call("GET", "/client/user/profile", "someone"))

    headers = {
        "Host": HOST,
        "Content-Type": "application/json",
        "Authorization": qiniu("GET", path, content_type="application/json", body=body),
    }
    async with h.session.get(h.base_url + path, data=pieces(), headers=headers) as response:
        reply = await response.json()
        assert (response.status, reply["code"]) == (200, 0), reply


async def test_signed_body_over_64_kib_is_400(h: Harness) -> None:
    path = "/server/auth/token?user_id=u-10"
    body = orjson.dumps({"pad": "p" * 70_000})
    headers = {
        "Host": HOST,
        "Content-Type": "application/json",
        "Authorization": qiniu("GET", path, content_type="application/json", body=body),
    }
    assert_error(await h.call("GET", path, data=body, headers=headers), 400)


# --- users ----------------------------------------------------------------------------------------


async def test_user_object_everywhere(harness: Harness) -> None:
    h = harness
    profile = assert_ok(await h.call("GET", "/client/user/profile", "alice"))
    check_user(profile)
    assert profile["user_id"] == "alice" and profile["nick"] == "alice"
    updated = assert_ok(
        await h.call("PUT", "/client/user/user", "alice", json={"extends": {"a": "1"}})
    )
    assert updated["extends"] == {"a": "1"} and updated["nick"] == "alice"
    updated = assert_ok(
        await h.call("PUT", "/client/user/user", "alice", json={"nick": "A", "extends": {"b": "2"}})
    )
    assert updated["extends"] == {"a": "1", "b": "2"} and updated["nick"] == "A"
    shown = assert_ok(await h.call("GET", "/client/user/user/alice", "bob"))
    check_user(shown)
    assert shown["im_userid"] == profile["im_userid"]
    # Over REST a JSON array, as the original server and its SDKs (§2).
    listed = assert_ok(await h.call("GET", "/client/user/users?user_ids=bob,alice", "bob"))
    assert [u["user_id"] for u in listed] == ["bob", "alice"]
    assert listed[1]["im_userid"] == profile["im_userid"]
    assert listed[0]["im_userid"] != profile["im_userid"]
    assert_error(await h.call("GET", "/client/user/user/nobody", "bob"), 404)
