"""PROTOCOL §2: tokens never appear in a log line, whichever component writes it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestServer

from livesignal.log_redaction import REDACTED, install_log_redaction, redact
from livesignal.settings import RtcSettings
from livesignal.signal.model.auth import RtcTokenCodec, TokenCodec
from tests.conftest import JWT_SECRET, Harness, TokenSuspects, leaked_tokens, record_token


def client_token() -> str:
    token, _ = TokenCodec(JWT_SECRET, 3600).issue("alice", time.time())
    return record_token(token)


def rtc_token() -> str:
    codec = RtcTokenCodec(RtcSettings(access_key="ak-1", secret_key="rtc-secret"))
    return record_token(codec.issue("room1", "alice", time.time()))


def assert_gone(token: str, text: str) -> None:
    signature = token.rsplit(".", 1)[-1] if "." in token else token.split(":")[1]
    assert token not in text and signature not in text, text
    assert REDACTED in text


# --- redact() ------------------------------------------------------------------------------


def test_a_client_jwt_is_redacted_wherever_it_stands() -> None:
    token = client_token()
    for text in (
        f"Bearer {token}",
        f"token {token}.",
        f"{{'token': '{token}'}}",
        f"b'GET /ws?x={token}\\xe2\\x82\\xac HTTP/1.1'",  # a parser's repr of a bad request line
        f"/client/user/user/{token}",
    ):
        assert_gone(token, redact(text))


def test_a_query_token_keeps_its_name_and_loses_its_value() -> None:
    assert redact("GET /ws?token=opaque-value&x=1 HTTP/1.1") == (
        "GET /ws?token=<redacted>&x=1 HTTP/1.1"
    )
    assert redact("/ws?Token=abc") == "/ws?Token=<redacted>"
    assert (
        redact("rtmp://h/live/r?expire=1&token=abc") == "rtmp://h/live/r?expire=1&token=<redacted>"
    )
    token = client_token()
    assert redact(f"/ws?access_token={token}&a=b") == "/ws?access_token=<redacted>&a=b"


def test_an_authorization_header_value_is_redacted() -> None:
    assert redact("Authorization: Qiniu ak:c2lnbmF0dXJl\r\nHost: x") == (
        "Authorization: <redacted>\r\nHost: x"
    )
    assert redact("{'Authorization': 'Bearer opaque', 'Host': 'h'}") == (
        "{'Authorization': '<redacted>', 'Host': 'h'}"
    )
    token = client_token()
    assert_gone(token, redact(f"authorization={token}"))


def test_an_rtc_room_token_is_redacted_with_its_access_key_and_signature() -> None:
    token = rtc_token()
    assert redact(f"bad Token {token} for room1") == "bad Token <redacted> for room1"
    assert_gone(token, redact(f"Token: {token}"))
    escaped = token.replace(":", "%3A").replace("=", "%3D")
    assert redact(f"/exchange?token={escaped}&x=1") == "/exchange?token=<redacted>&x=1"


def test_text_without_a_token_is_left_alone() -> None:
    for text in (
        '127.0.0.1 "GET /client/live/room/list?page_num=1" 200 1.2ms',
        "room live_1 ended: anchor absent since 1700000000",
        "missing token",
        "Unauthorized: invalid token",
        "",
    ):
        assert redact(text) == text


def test_a_hostile_long_line_is_redacted_in_linear_time() -> None:
    lines = ["a" * 200_000 + "eyJ", ":eyJ" * 50_000, "x:" * 100_000 + "eyJ", "token=" * 30_000]
    started = time.perf_counter()
    for line in lines:
        redact(line)
    assert time.perf_counter() - started < 1.0


# --- the LogRecord factory -----------------------------------------------------------------


@pytest.fixture
def test_logger() -> Iterator[logging.Logger]:
    install_log_redaction()
    logger = logging.getLogger("tests.log_redaction")
    yield logger
    logger.setLevel(logging.NOTSET)


def test_install_is_idempotent() -> None:
    install_log_redaction()
    installed = logging.getLogRecordFactory()
    install_log_redaction()
    assert logging.getLogRecordFactory() is installed


def test_message_args_and_exception_text_are_redacted(
    test_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    token = client_token()
    caplog.set_level(logging.INFO, logger=test_logger.name)
    try:
        raise ValueError(f"cannot use {token}")
    except ValueError:
        test_logger.exception("request %s failed", f"/ws?token={token}")
    record = caplog.records[-1]
    assert_gone(token, caplog.text)
    assert record.getMessage() == "request /ws?token=<redacted> failed"
    assert record.exc_info is None  # only the redacted text is left to format
    assert record.exc_text and "ValueError: cannot use <redacted>" in record.exc_text


def test_a_record_below_the_level_is_never_formatted(test_logger: logging.Logger) -> None:
    formatted = []

    class Costly:
        def __str__(self) -> str:
            formatted.append(1)
            return "costly"

    test_logger.setLevel(logging.WARNING)
    test_logger.info("%s", Costly())
    assert formatted == []
    test_logger.warning("%s", Costly())
    assert formatted == [1]


def test_the_session_scan_flags_a_line_holding_a_minted_token() -> None:
    # The conftest's end-of-session check, fed a record made without the redacting factory.
    token = client_token()
    scan = TokenSuspects()
    scan.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "leak %s", (token,), None))
    scan.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "eyJ but no token", (), None))
    assert leaked_tokens(scan.lines, {token}) == [f"leak {token}"]


# --- an in-process server: aiohttp's own loggers ---------------------------------------------


async def test_an_in_process_server_logs_no_token(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Even on aiohttp's stock runner (an app embedded by someone else), not only on the one
    `livesignal serve` uses, nothing logged shows a token."""
    stock = TestServer(harness.server.app, host="127.0.0.1")
    await stock.start_server()
    try:
        await _logs_no_token(harness, stock, caplog)
    finally:
        await stock.close()


async def _logs_no_token(
    harness: Harness, stock: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every component: aiohttp.access, aiohttp.server, ...
    token = harness.token("alice")
    # aiohttp's default access log quotes the request line, query included.
    url = str(stock.make_url("/client/user/profile"))
    async with harness.session.get(
        url, params={"token": token}, headers={"Authorization": token}
    ) as r:
        assert r.status == 200
    # A request line aiohttp's parser rejects: its stock handler logs the line in a traceback.
    reader, writer = await asyncio.open_connection("127.0.0.1", stock.port)
    writer.write(f"GET /ws?token={token}".encode() + "\u20ac HTTP/1.1\r\n\r\n".encode())
    assert (await reader.read()).startswith(b"HTTP/1.0 400")
    writer.close()
    await writer.wait_closed()
    assert "GET /client/user/profile?token=<redacted>" in caplog.text
    assert "Error handling request" in caplog.text
    assert_gone(token, caplog.text)
