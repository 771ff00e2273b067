"""Client input never makes the gateway answer 50000/5xx or log a traceback (PROTOCOL §6, §7).

One test per reported case, then seeded fuzzing: mutated real aiortc offers against /exchange
and mutated nginx-rtmp forms against on_publish. The seeds make every run the same.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection

from livesignal.media.http.mount import GATEWAY_KEY
from livesignal.media.sdp import check as sdp_check
from livesignal.settings import RtcSettings, StreamSettings
from livesignal.signal.model.auth import StreamUrls

from ._rtc import (
    CONFIG,
    SyntheticAudio,
    SyntheticVideo,
    gateway_tasks,
    headers,
    live_threads,
    open_peer_connections,
    wait_for,
)

Client = TestClient[Any, Any]
TokenFor = Callable[[str, str], str]

ROOM = "room1"
OFFER_FUZZ_SEED = 20240607
OFFER_FUZZ_CASES = 300
FORM_FUZZ_SEED = 7
FORM_FUZZ_CASES = 300
ON_PUBLISH = "/media/rtmp/on_publish"
FORM = "application/x-www-form-urlencoded"


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
async def real_offer() -> AsyncIterator[str]:
    """What an aiortc client sends: audio and video to publish, one recvonly video line."""
    pc = RTCPeerConnection(CONFIG)
    pc.addTrack(SyntheticAudio())
    pc.addTrack(SyntheticVideo())
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer: str = pc.localDescription.sdp
    await pc.close()
    yield offer


def lines_of(offer: str) -> list[str]:
    return offer.rstrip("\r\n").split("\r\n")


def joined(lines: list[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


async def exchange(client: Client, token: str, offer: str) -> dict[str, Any]:
    body = {"sdp": {"type": "offer", "sdp": offer}, "subscribeList": []}
    response = await client.post("/exchange", json=body, headers=headers(token, ROOM))
    assert response.status == 200
    reply: dict[str, Any] = await response.json()
    return reply


def assert_no_traceback(records: list[logging.LogRecord]) -> None:
    gc.collect()  # "Task exception was never retrieved" is logged when the task is collected
    bad = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [f"{r.name}: {r.getMessage()}" for r in bad]


def assert_refused(reply: dict[str, Any], *reason_words: str) -> None:
    assert reply["resultCode"] == 40002, reply
    for word in reason_words:
        assert word in reply["message"], reply


def signed_form(stream_urls: StreamUrls, name: str, expire_at: int) -> dict[str, str]:
    """The form nginx-rtmp posts for a push to the signed URL of `name`."""
    query = stream_urls.push_url(name, expire_at).split("?", 1)[1]
    fields = dict(part.split("=", 1) for part in query.split("&"))
    return {"call": "publish", "app": "live", "name": name, "type": "live", **fields}


# --- the reported cases -----------------------------------------------------------------------


async def test_offer_with_setup_holdconn_is_40002(
    client: Client, token_for: TokenFor, real_offer: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="livesignal")
    offer = real_offer.replace("a=setup:actpass", "a=setup:holdconn")
    reply = await exchange(client, token_for(ROOM, "alice"), offer)
    assert_refused(reply, "a=setup", "holdconn", "actpass, active, passive")
    # the refusal is one INFO line, not a traceback
    ours = [(r.levelno, r.exc_info) for r in caplog.records if r.name.startswith("livesignal")]
    assert ours == [(logging.INFO, None)]
    assert_no_traceback(caplog.records)


async def test_offer_without_setup_is_40002(
    client: Client, token_for: TokenFor, real_offer: str, caplog: pytest.LogCaptureFixture
) -> None:
    offer = joined([line for line in lines_of(real_offer) if not line.startswith("a=setup")])
    reply = await exchange(client, token_for(ROOM, "alice"), offer)
    assert_refused(reply, "no a=setup")
    assert_no_traceback(caplog.records)


async def test_rtpmap_without_clock_rate_is_40002(
    client: Client, token_for: TokenFor, real_offer: str, caplog: pytest.LogCaptureFixture
) -> None:
    offer = real_offer.replace("opus/48000/2", "opus")
    reply = await exchange(client, token_for(ROOM, "alice"), offer)
    assert_refused(reply, "a=rtpmap", "no clock rate")
    assert_no_traceback(caplog.records)


async def test_offer_without_fingerprint_is_40002(
    client: Client,
    media_app: web.Application,
    token_for: TokenFor,
    real_offer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Accepted before, then DTLS failed once ICE connected: refused up front now.
    kept = [line for line in lines_of(real_offer) if not line.startswith("a=fingerprint")]
    reply = await exchange(client, token_for(ROOM, "alice"), joined(kept))
    assert_refused(reply, "a=fingerprint", "DTLS")
    assert media_app[GATEWAY_KEY].media.peer_count() == 0
    # only an unknown digest is no better
    unknown = real_offer.replace("a=fingerprint:sha-", "a=fingerprint:md-")
    assert_refused(await exchange(client, token_for(ROOM, "alice"), unknown), "a=fingerprint")
    assert_no_traceback(caplog.records)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_one_mib_is_40002(
    client: Client, token_for: TokenFor, caplog: pytest.LogCaptureFixture, chunked: bool
) -> None:
    body = b'{"sdp": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    async def in_chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await client.post(
        "/exchange",
        data=in_chunks() if chunked else io.BytesIO(body),
        headers=headers(token_for(ROOM, "alice"), ROOM),
    )
    assert response.status == 200
    assert_refused(await response.json(), "over 1 MiB")
    assert_no_traceback(caplog.records)


@pytest.mark.parametrize(
    "digits",
    [
        pytest.param(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"), id="arabic-indic"),
        pytest.param(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"), id="superscript"),
    ],
)
async def test_on_publish_with_non_ascii_digit_expire_is_403(
    client: Client,
    stream_urls: StreamUrls,
    caplog: pytest.LogCaptureFixture,
    digits: dict[int, str],
) -> None:
    form = signed_form(stream_urls, "s1", int(time.time()) + 600)
    assert (await client.post(ON_PUBLISH, data=form)).status == 200
    # The same expiry and a valid token, its digits spelled in another script.
    form["expire"] = form["expire"].translate(digits)
    assert (await client.post(ON_PUBLISH, data=form)).status == 403
    assert (await client.post(ON_PUBLISH, data={**form, "expire": "²"})).status == 403
    assert_no_traceback(caplog.records)


async def test_on_publish_with_5000_digit_expire_is_403(
    client: Client, stream_urls: StreamUrls, caplog: pytest.LogCaptureFixture
) -> None:
    form = signed_form(stream_urls, "s1", int(time.time()) + 600)
    response = await client.post(ON_PUBLISH, data={**form, "expire": "9" * 5000})
    assert response.status == 403
    assert_no_traceback(caplog.records)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("a=ssrc:{} cname:x", "a=ssrc lines"),
        ("a=candidate:1 1 udp 1 10.0.{}.{} 9 typ host", "a=candidate lines"),
        ("a=rtpmap:96 opus/48000/2", "payload type 96 twice"),
    ],
    ids=["ssrc", "candidate", "rtpmap"],
)
async def test_offer_with_thousands_of_repeated_lines_is_40002(
    client: Client, token_for: TokenFor, real_offer: str, line: str, reason: str
) -> None:
    # aiortc and aioice take each of these in time proportional to the ones before it: 1 MiB
    # of them would block every other client for seconds.
    lines = lines_of(real_offer)
    at = lines.index("a=rtcp-mux") + 1
    many = [line.format(i // 256, i % 256) for i in range(20_000)]
    reply = await exchange(client, token_for(ROOM, "alice"), joined(lines[:at] + many + lines[at:]))
    assert_refused(reply, reason)


# --- the other gateway routes -------------------------------------------------------------------


async def test_other_routes_answer_junk_with_40001_or_40002(
    client: Client, token_for: TokenFor, caplog: pytest.LogCaptureFixture
) -> None:
    good = headers(token_for(ROOM, "alice"), ROOM)
    huge = 2**70
    no_sdp = {"type": "offer", "sdp": "x"}
    nowhere = "rtmp://h/a/b"
    huge_uri = [{"uri": "u" * 10**5}]
    cases: list[tuple[str, str, dict[str, str], Any, int]] = [
        ("POST", "/exchange", good, b"\xff\xfe{", 40002),
        ("POST", "/exchange", good, b'{"sdp": 1e400}', 40002),
        ("POST", "/exchange", good, b"[" * 5000 + b"]" * 5000, 40002),
        ("POST", "/exchange", good, {"sdp": {"type": "offer", "sdp": ["v=0"]}}, 40002),
        ("POST", "/exchange", good, {"sdp": no_sdp, "subscribeList": {}}, 40002),
        ("POST", "/exchange", good, {"sdp": no_sdp, "subscribeList": huge_uri}, 40002),
        ("POST", "/exchange", {"Token": "é:ü:ö", "Room-Id": ROOM}, {}, 40001),
        ("POST", "/exit", {"Token": "a:b:" + "A" * 4000, "Room-Id": ROOM}, None, 40001),
        ("POST", "/exit", {**good, "Room-Id": "٣" * 100}, None, 40001),
        ("POST", "/rtmp/exchange", good, {"rtmp": {"uri": "rtmp://h/a/b\x00c"}}, 40002),
        ("POST", "/rtmp/exchange", good, {"rtmp": {"uri": "rtmp://h/" + "a" * 5000}}, 40002),
        ("POST", "/rtmp/exchange", good, {"rtmp": {"uri": nowhere, "timestamp": huge}}, 40002),
        ("POST", "/rtmp/exchange", good, {"rtmp": {"uri": nowhere, "timestamp": "1"}}, 40002),
        ("POST", "/rtmp/exchange", good, {"rtmp": {"rtmpSubscribeList": "x"}, "rtc": []}, 40002),
        ("POST", "/rtmp/exchange", good, {"rtmp": {"rtmpSubscribeList": [{"rtmpUri": 5}]},
                                          "rtc": {"subscribeList": [{"uri": "nope"}]}}, 40002),
        ("POST", "/rtmp/exit", {"Room-Id": ROOM}, None, 40001),
        ("POST", "/wechat/exchange", good, {"rtmp": {"audio": None}}, 40002),
        ("POST", "/wechat/exchange", good, {"subscribeList": [{"uri": "\u2028"}]}, 40002),
        ("POST", "/wechat/exchange", good, b"\x00" * 10, 40002),
        ("POST", "/wechat/exit", {"Token": "", "Room-Id": ROOM}, None, 40001),
        ("GET", "/media/resources?room_id=%FF%FE", good, None, 40001),
        ("GET", "/media/resources?room_id=", good, None, 40002),
    ]  # fmt: skip
    for method, path, sent_headers, body, code in cases:
        if isinstance(body, bytes) or body is None:
            response = await client.request(method, path, data=body, headers=sent_headers)
        else:
            response = await client.request(method, path, json=body, headers=sent_headers)
        assert response.status == 200, (path, body)
        reply = await response.json()
        assert reply["resultCode"] == code, (path, str(body)[:80], reply)
        assert reply["message"] and len(reply["message"]) < 500
    assert_no_traceback(caplog.records)


async def test_rtmp_push_url_the_pusher_cannot_use_is_40002(
    client: Client, token_for: TokenFor
) -> None:
    alice = token_for(ROOM, "alice")
    for url in ("rtmp://127.0.0.1:99999/live/s", "rtmp://127.0.0.1/live", "rtmps://h/live/s"):
        body = {
            "rtmp": {"rtmpSubscribeList": [{"rtmpUri": url}]},
            "rtc": {"subscribeList": [{"uri": "audio-x"}]},
        }
        response = await client.post("/rtmp/exchange", json=body, headers=headers(alice, ROOM))
        reply = await response.json()
        assert_refused(reply, "rtmpUri")


def test_push_signature_check_refuses_any_junk_for_every_security_mode() -> None:
    junk = ["", "١٢٣", "²", "9" * 5000, "-1", " 1", "1.5", "\udcff", "\x00", "é" * 1000]
    for security in ("static", "expiry", "expiry_sk"):
        urls = StreamUrls(
            StreamSettings(publish_base="rtmp://h/live", security=security, publish_key="k"),
            RtcSettings(access_key="ak", secret_key="sk"),
        )
        for value in junk:
            args = {"key": value, "expire": value, "e": value, "token": value}
            assert urls.verify_push("live", "s", args, time.time()) is False
            assert urls.verify_push("live", value, {"token": value}, time.time()) is False


# --- fuzzing /exchange ----------------------------------------------------------------------

JUNK = [
    "",
    " ",
    "x",
    "-1",
    "0",
    "65536",
    "4294967296",
    "9" * 5000,
    "١٢٣",
    "²",
    "%FF",
    ":",
    "a b c",
    "\u2028",
    "\x00",
    "\r",
    "é" * 3,
    "z" * 3000,
    "sha-256",
    "actpass extra",
    "96 opus/",
    "96 opus/0",
    "300 VP8/90000",
    "96",
    "* nack",
    "1 2 3 4 5 6 7 8",
]
EDITED_ATTRIBUTES = (
    "a=rtpmap",
    "a=fmtp",
    "a=rtcp-fb",
    "a=ssrc",
    "a=extmap",
    "a=candidate",
    "a=msid",
    "a=mid",
    "a=group",
)
KINDS = ["audio", "video", "application", "text", "", "AUDIO", "audio video"]
DIRECTION_VALUES = ["sendrecv", "sendonly", "recvonly", "inactive", "sendrecv:x", "both"]


def _junk(rng: random.Random) -> str:
    """A value from JUNK, or a few random code points (controls, any plane, surrogates)."""
    if rng.random() < 0.3:
        points = [rng.choice([rng.randrange(0x20), rng.randrange(0x110000)]) for _ in range(5)]
        return "".join(chr(point) for point in points[: rng.randrange(1, 6)])
    return rng.choice(JUNK)


def _sections(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    session: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


def _flatten(session: list[str], sections: list[list[str]]) -> list[str]:
    return session + [line for section in sections for line in section]


def _drop_line(rng: random.Random, lines: list[str]) -> list[str]:
    if lines:
        del lines[rng.randrange(len(lines))]
    return lines


def _duplicate_line(rng: random.Random, lines: list[str]) -> list[str]:
    lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
    return lines


def _replace_value(rng: random.Random, lines: list[str]) -> list[str]:
    index = rng.randrange(len(lines))
    head, colon, _ = lines[index].partition(":")
    if colon and rng.random() < 0.15:
        lines[index] = head  # the attribute without its value
    else:
        lines[index] = (head + ":" if colon else lines[index][:2]) + _junk(rng)
    return lines


def _replace_token(rng: random.Random, lines: list[str]) -> list[str]:
    index = rng.randrange(len(lines))
    tokens = lines[index].split(" ")
    tokens[rng.randrange(len(tokens))] = _junk(rng)
    lines[index] = " ".join(tokens)
    return lines


def _insert_garbage(rng: random.Random, lines: list[str]) -> list[str]:
    index = rng.randrange(len(lines))
    at = rng.randrange(len(lines[index]) + 1)
    lines[index] = lines[index][:at] + _junk(rng) + lines[index][at:]
    return lines


def _shuffle_sections(rng: random.Random, lines: list[str]) -> list[str]:
    session, sections = _sections(lines)
    choice = rng.randrange(3)
    if choice == 0 and len(sections) > 1:
        rng.shuffle(sections)
    elif choice == 1 and sections:
        del sections[rng.randrange(len(sections))]
    elif sections:
        sections.append(list(rng.choice(sections)))
    return _flatten(session, sections)


def _edit_m_line(rng: random.Random, lines: list[str]) -> list[str]:
    m_lines = [i for i, line in enumerate(lines) if line.startswith("m=")]
    if not m_lines:
        return lines
    index = rng.choice(m_lines)
    parts = lines[index][2:].split(" ")
    parts += [""] * (4 - len(parts))  # an earlier mutation may have cut the line short
    field = rng.randrange(4)
    if field == 0:
        parts[0] = rng.choice(KINDS)
    elif field == 1:
        parts[1] = rng.choice(["0", "9", "65535", "65536", "99999", "9" * 5000, "٩", "-9", "9/2"])
    elif field == 2:
        parts[2] = rng.choice(["RTP/AVP", "UDP/DTLS/SCTP", "udp/tls/rtp/savpf", "", "RTP/SAVPF"])
    else:
        choices = ["0", "72", "96", "97", "127", "128", "300", "x", "٩"]
        parts[3:] = [rng.choice(choices) for _ in range(rng.randrange(0, 4))]
    lines[index] = "m=" + " ".join(parts)
    return lines


def _edit_direction(rng: random.Random, lines: list[str]) -> list[str]:
    directions = [i for i, line in enumerate(lines) if line[2:] in DIRECTION_VALUES[:4]]
    if directions:
        index = rng.choice(directions)
        if rng.random() < 0.2:
            del lines[index]
        else:
            lines[index] = "a=" + rng.choice(DIRECTION_VALUES)
    return lines


def _edit_codecs(rng: random.Random, lines: list[str]) -> list[str]:
    codec_lines = [i for i, line in enumerate(lines) if line.startswith(EDITED_ATTRIBUTES)]
    if not codec_lines:
        return lines
    index = rng.choice(codec_lines)
    name, _, value = lines[index].partition(":")
    tokens = value.split(" ")
    if rng.random() < 0.5:
        tokens[0] = rng.choice(["0", "96", "128", "300", "٩٦", "x", "*", "", "9" * 30])
    else:
        tokens = tokens[: rng.randrange(len(tokens) + 1)] + [_junk(rng)] * rng.randrange(2)
    lines[index] = name + ":" + " ".join(tokens)
    return lines


MUTATIONS = [
    _drop_line,
    _duplicate_line,
    _replace_value,
    _replace_token,
    _insert_garbage,
    _shuffle_sections,
    _edit_m_line,
    _edit_direction,
    _edit_codecs,
]


def mutated_offer(rng: random.Random, offer: str) -> str:
    lines = lines_of(offer)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        lines = rng.choice(MUTATIONS)(rng, lines) or lines_of(offer)
    text = joined(lines)
    if rng.random() < 0.08:
        text = text[: rng.randrange(len(text))]  # truncated in transit
    return text


async def test_fuzzed_offers_get_10000_or_40002_and_leave_nothing_behind(
    client: Client,
    media_app: web.Application,
    token_for: TokenFor,
    real_offer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # a traceback at any level counts
    tasks_before = gateway_tasks()
    threads_before = live_threads()
    rng = random.Random(OFFER_FUZZ_SEED)
    users = [f"user{i}" for i in range(3)]
    tokens = {user: token_for(ROOM, user) for user in users}
    codes: Counter[int] = Counter()
    for _ in range(OFFER_FUZZ_CASES):
        user = rng.choice(users)
        offer = mutated_offer(rng, real_offer)
        reply = await exchange(client, tokens[user], offer)
        codes[reply["resultCode"]] += 1
        assert reply["resultCode"] in (10000, 40002), (offer, reply)
        if reply["resultCode"] == 40002:
            assert reply["message"].strip() and len(reply["message"]) < 500, reply
        # Now and then the client leaves; else its next offer renegotiates (same ICE
        # credentials) or replaces (new ones) the connection this one left.
        if rng.random() < 0.3:
            await client.post("/exit", headers=headers(tokens[user], ROOM))
    # Both paths were exercised: some mutations are harmless, most are not.
    assert codes[10000] >= 10 and codes[40002] >= OFFER_FUZZ_CASES // 2, codes

    for user in users:
        await client.post("/exit", headers=headers(tokens[user], ROOM))
    media = media_app[GATEWAY_KEY].media
    assert media.peer_count() == 0
    assert media.resources(ROOM) == []
    assert open_peer_connections() == []
    await wait_for(lambda: gateway_tasks() <= tasks_before, 5)
    await wait_for(lambda: live_threads() <= threads_before, 5)
    assert_no_traceback(caplog.records)


# --- fuzzing on_publish -------------------------------------------------------------------------


def _encoded(pairs: list[tuple[str, str]]) -> bytes:
    # A lone surrogate goes out as the invalid UTF-8 it encodes to: the server must cope.
    encode = partial(quote, errors="surrogatepass")
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in pairs).encode()


def mutated_form(rng: random.Random, form: dict[str, str]) -> tuple[bytes, str]:
    """A form body (and content type) derived from a correctly signed one."""
    pairs = list(form.items())
    for _ in range(rng.choice([1, 1, 2, 3])):
        choice = rng.randrange(8)
        index = rng.randrange(len(pairs)) if pairs else 0
        if choice == 0 and pairs:
            del pairs[index]  # a missing field
        elif choice == 1 and pairs:
            pairs.append((pairs[index][0], _junk(rng)))  # a repeated key
        elif choice == 2 and pairs:
            pairs[index] = (pairs[index][0], _junk(rng))
        elif choice == 3 and pairs:
            pairs[index] = (pairs[index][0], "x" * rng.choice([100, 20_000]))  # a huge value
        elif choice == 4:
            pairs.append((_junk(rng), _junk(rng)))
        elif choice == 5:
            value = rng.choice(["١٢٣", "²", "9" * 5000, "0" * 20, "-5", "１２３"])
            pairs.append((rng.choice(["expire", "e"]), value))
        elif choice == 6:
            pairs = [(k, v) for k, v in pairs if k != "expire"] + [("expire", "9" * 5000)]
        else:
            pairs.extend((f"f{i}", "v") for i in range(150))  # too many fields
    body = _encoded(pairs)
    roll = rng.random()
    if roll < 0.1:
        body = body[: rng.randrange(len(body) + 1)] + bytes([0xFF, 0xFE, 0x80])  # not UTF-8
    elif roll < 0.15:
        body += b"&name=%FF%FE"  # percent-encoded, still not UTF-8
    content_type = FORM if rng.random() < 0.9 else "multipart/form-data; boundary=x"
    return body, content_type


async def test_fuzzed_on_publish_forms_get_200_or_403(
    client: Client, stream_urls: StreamUrls, caplog: pytest.LogCaptureFixture
) -> None:
    form = signed_form(stream_urls, "s1", int(time.time()) + 600)
    signed = _encoded(list(form.items()))
    response = await client.post(ON_PUBLISH, data=signed, headers={"Content-Type": FORM})
    assert response.status == 200
    rng = random.Random(FORM_FUZZ_SEED)
    statuses: Counter[int] = Counter()
    for _ in range(FORM_FUZZ_CASES):
        body, content_type = mutated_form(rng, form)
        response = await client.post(ON_PUBLISH, data=body, headers={"Content-Type": content_type})
        statuses[response.status] += 1
        assert response.status in (200, 403), (body[:200], response.status)
    # a 2 MB form is over aiohttp's own body limit too: still a refusal, not a 5xx
    huge_form = io.BytesIO(b"name=" + b"x" * (2 * 1024 * 1024))
    response = await client.post(ON_PUBLISH, data=huge_form, headers={"Content-Type": FORM})
    statuses[response.status] += 1
    assert response.status == 403
    assert statuses[200] >= 5 and statuses[403] >= FORM_FUZZ_CASES // 2, statuses
    assert_no_traceback(caplog.records)


async def test_offers_aiortc_refuses_half_way_leave_no_connection(
    client: Client, media_app: web.Application, token_for: TokenFor, real_offer: str
) -> None:
    # Failures half way through aiortc (no codec in common) close the connection they made.
    no_common_codec = real_offer.replace("opus/48000/2", "speex/48000").replace(
        "VP8/90000", "VP7/90000"
    )
    no_common_codec = no_common_codec.replace("H264/90000", "H263/90000")
    no_common_codec = no_common_codec.replace("G722/8000", "G729/8000")
    no_common_codec = no_common_codec.replace("PCMU/8000", "X/8000").replace("PCMA/8000", "Y/8000")
    replies = await asyncio.gather(
        *(exchange(client, token_for(ROOM, f"u{i}"), no_common_codec) for i in range(5))
    )
    for reply in replies:
        assert_refused(reply, "offer not accepted")
    assert media_app[GATEWAY_KEY].media.peer_count() == 0
    assert open_peer_connections() == []


# --- what browsers send passes ------------------------------------------------------------------

FINGERPRINT = ":".join(["7B", "8B", "F0", "65"] * 8)
# Shaped like Chrome's offers: mDNS host candidate, extmap-allow-mixed, red/ulpfec/AV1, rtcp-rsize.
CHROME_OFFER = joined(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS stream0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=candidate:3884326519 1 udp 2122260223 0f1e2d3c-aaaa-bbbb-cccc-0123456789ab.local "
        "54321 typ host generation 0 network-id 1",
        "a=ice-ufrag:7sFv",
        "a=ice-pwd:dOTZKZNVlO9RSGsEGM63JXT2",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=sendrecv",
        "a=msid:stream0 track-audio",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:13 CN/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
        "a=ssrc:1001 cname:abcdEFGH12345678",
        "a=ssrc:1001 msid:stream0 track-audio",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45 46 116 118",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:7sFv",
        "a=ice-pwd:dOTZKZNVlO9RSGsEGM63JXT2",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:1",
        "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:13 urn:3gpp:video-orientation",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=sendrecv",
        "a=msid:stream0 track-video",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 ccm fir",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:102 H264/90000",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        "a=rtpmap:103 rtx/90000",
        "a=fmtp:103 apt=102",
        "a=rtpmap:45 AV1/90000",
        "a=fmtp:45 level-idx=5;profile=0;tier=0",
        "a=rtpmap:46 rtx/90000",
        "a=fmtp:46 apt=45",
        "a=rtpmap:116 red/90000",
        "a=rtpmap:118 ulpfec/90000",
        "a=ssrc-group:FID 2002 2003",
        "a=ssrc:2002 cname:abcdEFGH12345678",
        "a=ssrc:2003 cname:abcdEFGH12345678",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:7sFv",
        "a=ice-pwd:dOTZKZNVlO9RSGsEGM63JXT2",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:2",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
    ]
)
# Shaped like Firefox's: session-level fingerprint, fmtp before rtpmap, {uuid} msids.
FIREFOX_OFFER = joined(
    [
        "v=0",
        "o=mozilla...THIS_IS_SDPARTA-99.0 3918340535123985043 0 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=group:BUNDLE 0 1",
        "a=ice-options:trickle",
        "a=msid-semantic:WMS *",
        "m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101",
        "c=IN IP4 0.0.0.0",
        "a=sendrecv",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1",
        "a=fmtp:101 0-15",
        "a=ice-pwd:e2a5d1e6b2c6a1b7c0f8d1e2a3b4c5d6",
        "a=ice-ufrag:1a2b3c4d",
        "a=mid:0",
        "a=msid:{7a3c2f10-1111-2222-3333-444455556666} {b1c2d3e4-1111-2222-3333-444455556666}",
        "a=rtcp-mux",
        "a=rtpmap:109 opus/48000/2",
        "a=rtpmap:9 G722/8000/1",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=setup:actpass",
        "a=ssrc:3350290633 cname:{a5c2d3e4-1111-2222-3333-444455556666}",
        "m=video 9 UDP/TLS/RTP/SAVPF 120 124 126 127",
        "c=IN IP4 0.0.0.0",
        "a=recvonly",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:6/recvonly http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        "a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1",
        "a=fmtp:120 max-fs=12288;max-fr=60",
        "a=fmtp:124 apt=120",
        "a=fmtp:127 apt=126",
        "a=ice-pwd:e2a5d1e6b2c6a1b7c0f8d1e2a3b4c5d6",
        "a=ice-ufrag:1a2b3c4d",
        "a=mid:1",
        "a=rtcp-fb:120 nack",
        "a=rtcp-fb:120 nack pli",
        "a=rtcp-fb:120 ccm fir",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:120 VP8/90000",
        "a=rtpmap:124 rtx/90000",
        "a=rtpmap:126 H264/90000",
        "a=rtpmap:127 rtx/90000",
        "a=setup:actpass",
    ]
)


@pytest.mark.parametrize("offer", [CHROME_OFFER, FIREFOX_OFFER], ids=["chrome", "firefox"])
def test_browser_shaped_offers_pass_the_checks(offer: str) -> None:
    sdp_check.check_offer(offer)


async def test_a_browser_shaped_offer_is_answered(
    client: Client, media_app: web.Application, token_for: TokenFor
) -> None:
    token = token_for(ROOM, "firefox")
    reply = await exchange(client, token, FIREFOX_OFFER)
    assert reply["resultCode"] == 10000, reply
    assert [item["mediaType"] for item in reply["publishList"]] == [0]  # its sendrecv audio
    await client.post("/exit", headers=headers(token, ROOM))
    assert media_app[GATEWAY_KEY].media.peer_count() == 0


async def test_refused_offer_leaves_the_working_connection_alone(
    client: Client, media_app: web.Application, token_for: TokenFor, real_offer: str
) -> None:
    token = token_for(ROOM, "alice")
    assert (await exchange(client, token, real_offer))["resultCode"] == 10000
    media = media_app[GATEWAY_KEY].media
    working = media.connection(ROOM, "alice")
    session, sections = _sections(lines_of(real_offer))
    reordered = joined(_flatten(session, [sections[1], sections[0], sections[2]]))
    bundle_of_two = [line.replace(" 0 1 2", " 0 1") for line in session]
    fewer = joined(_flatten(bundle_of_two, sections[:2]))
    for offer, reason in [
        (real_offer.replace("a=setup:actpass", "a=setup:holdconn"), "holdconn"),
        (reordered, "cannot be reordered"),  # same ICE credentials: a renegotiation
        (fewer, "cannot be removed"),
    ]:
        assert_refused(await exchange(client, token, offer), reason)
        assert media.connection(ROOM, "alice") is working
        assert working is not None and working.connectionState != "closed"
    await client.post("/exit", headers=headers(token, ROOM))
    assert media.peer_count() == 0


async def test_on_publish_refuses_a_second_stream_name(
    client: Client, stream_urls: StreamUrls
) -> None:
    # nginx-rtmp appends the pusher's query to its form: a pusher signed for "mine" must not
    # be let into "theirs" by adding name=mine to the query of a push to "theirs".
    signed = signed_form(stream_urls, "mine", int(time.time()) + 600)
    pairs = [*signed.items()]
    theirs = [(k, "theirs" if k == "name" else v) for k, v in pairs] + [("name", "mine")]
    response = await client.post(ON_PUBLISH, data=_encoded(theirs), headers={"Content-Type": FORM})
    assert response.status == 403
    response = await client.post(ON_PUBLISH, data=_encoded(pairs), headers={"Content-Type": FORM})
    assert response.status == 200
