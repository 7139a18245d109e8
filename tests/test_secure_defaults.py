"""Secure by default (issue 16, item 8): a worker bound beyond loopback needs the admin
token; the ingest closes half-sent requests and idle connections, refuses a bad key
before reading the body, and can rate-limit per write key; caller text cannot forge
log lines."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.envreader import Secret
from streams.ops.ingest import create_app, serve
from streams.ops.logs import RedactingStreamHandler, escape_control
from streams.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[1]
TOKEN = "a-demo-admin-token-of-32-chars!!"
KEY = "wk-secure-1"


# ------------------------------------------------------------------ the worker's web port


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "worker-1.internal", "[::]"])
def test_a_web_server_beyond_loopback_without_a_token_is_refused_naming_the_variable(host):
    with pytest.raises(SettingsError, match="CS_RELAY_ADMIN_TOKEN") as info:
        Settings.from_env({"CS_RELAY_WEB_HOST": host})
    assert "CS_RELAY_WEB_HOST" in str(info.value)
    assert Settings.from_env({"CS_RELAY_WEB_HOST": host, "CS_RELAY_ADMIN_TOKEN": TOKEN}).web_host == host
    errors: list[str] = []
    Settings.from_env({"CS_RELAY_WEB_HOST": host}, errors=errors)  # cs-relay config names it too
    assert any("CS_RELAY_ADMIN_TOKEN" in e for e in errors)


def test_the_worker_command_refuses_to_start_naming_the_variable():
    from tests.test_cli import cs_relay, one_error_line

    result = cs_relay("worker", CS_RELAY_WEB_HOST="0.0.0.0")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "CS_RELAY_ADMIN_TOKEN" in line and "CS_RELAY_WEB_HOST=0.0.0.0" in line, line


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_a_loopback_web_server_needs_no_token(host):
    assert Settings.from_env({"CS_RELAY_WEB_HOST": host}).web_host == host


def test_docker_compose_passes_a_token_from_the_environment_with_a_demo_default():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    env = compose["x-relay-env"]
    default = re.fullmatch(r"\$\{CS_RELAY_ADMIN_TOKEN:-(.+)\}", env["CS_RELAY_ADMIN_TOKEN"])
    assert default is not None, env["CS_RELAY_ADMIN_TOKEN"]
    # what the image's worker (CS_RELAY_WEB_HOST=0.0.0.0) reads in compose starts
    assert Settings.from_env({"CS_RELAY_WEB_HOST": "0.0.0.0", "CS_RELAY_ADMIN_TOKEN": default[1]}).admin_token
    for name in ("worker", "mocks", "ingest"):
        service = compose["services"][name]["environment"]
        assert service is env or service.get("CS_RELAY_ADMIN_TOKEN") == env["CS_RELAY_ADMIN_TOKEN"], name


def test_ingest_rate_limit_setting():
    assert Settings.from_env({}).ingest_rate_limit == 0  # off
    assert Settings.from_env({"CS_RELAY_INGEST_RATE_LIMIT": "50"}).ingest_rate_limit == 50
    with pytest.raises(SettingsError, match="CS_RELAY_INGEST_RATE_LIMIT"):
        Settings.from_env({"CS_RELAY_INGEST_RATE_LIMIT": "-1"})


# ------------------------------------------------------------------ log lines


def test_caller_text_cannot_start_a_new_text_log_line():
    out = io.StringIO()
    handler = RedactingStreamHandler(out, secrets=[])
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    forged = "m-1\nERROR cs-relay: admin token accepted\r\x1b[2K"
    handler.handle(logging.LogRecord("cs_relay", logging.INFO, __file__, 1, "duplicate messageId %s", (forged,), None))
    handler.handle(logging.LogRecord("cs_relay", logging.INFO, __file__, 1, f"in the message: {forged}", None, None))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0] == "INFO duplicate messageId m-1\\nERROR cs-relay: admin token accepted\\r\\x1b[2K"
    assert "\x1b" not in out.getvalue()


def test_escape_control_keeps_printable_text_and_tabs_of_nothing():
    assert escape_control("plain ütf-8 text") == "plain ütf-8 text"
    assert escape_control("a\tb\u2028c\x00") == "a\\tb\\u2028c\\x00"


def test_a_traceback_keeps_its_lines():
    out = io.StringIO()
    handler = RedactingStreamHandler(out, secrets=[])
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        exc_info = sys.exc_info()
    handler.handle(logging.LogRecord("cs_relay", logging.ERROR, __file__, 1, "failed", None, exc_info))
    assert out.getvalue().startswith("failed\nTraceback (most recent call last):\n")


# ------------------------------------------------------------------ the ingest's connections


class Sink:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def send(self, records: Any) -> None:
        self.records.extend(records)


@contextlib.asynccontextmanager
async def ingest(**options: Any) -> AsyncIterator[int]:
    serve_options = {k: options.pop(k) for k in ("idle_timeout",) if k in options}
    runner, port = await serve(create_app((Secret(KEY),), Sink(), **options), "127.0.0.1", 0, **serve_options)
    try:
        yield port
    finally:
        await runner.cleanup()


def basic(key: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    data = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            data += chunk
    return data, time.monotonic() - started


async def test_half_a_request_head_is_closed_within_seconds():
    async with ingest(idle_timeout=1.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Ty")  # and then nothing
        await writer.drain()
        data, took = await closed_within(reader, 5)
        writer.close()
    assert took < 3, took


async def test_the_default_head_timeout_is_a_few_seconds():
    async with ingest() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        _, took = await closed_within(reader, 15)
        writer.close()
    assert took < 12, took


async def test_half_a_body_is_answered_408_and_closed():
    async with ingest(body_timeout=1.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(KEY)}\r\nContent-Length: 100\r\n\r\n"
        writer.write(head.encode() + b'{"userId": "u1",')
        await writer.drain()
        data, took = await closed_within(reader, 5)
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b'"code": "request_timeout"' in data and took < 3, took


async def test_an_idle_keep_alive_connection_is_closed():
    async with ingest(idle_timeout=1.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b'{"userId": "u1", "event": "E"}'
        head = (
            f"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(KEY)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        data, took = await closed_within(reader, 5)
        writer.close()
    assert data.startswith(b"HTTP/1.1 200 ") and took < 3, (data[:100], took)


async def test_a_bad_key_is_refused_before_the_body_is_read():
    async with ingest(body_timeout=30.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('wrong')}\r\nContent-Length: 400000\r\n\r\n"
        )
        writer.write(head.encode())  # no body at all: the answer must not wait for it
        await writer.drain()
        async with asyncio.timeout(3):
            status = await reader.readline()
        writer.close()
    assert status.startswith(b"HTTP/1.1 401 "), status


async def test_requests_beyond_the_rate_limit_of_a_write_key_are_429_with_retry_after():
    import aiohttp

    now = [1000.0]
    other = "wk-secure-2"
    async with contextlib.AsyncExitStack() as stack:
        runner, port = await serve(
            create_app((Secret(KEY), Secret(other)), Sink(), rate_limit=2.0, rate_clock=lambda: now[0]),
            "127.0.0.1",
            0,
        )
        stack.push_async_callback(runner.cleanup)
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def post(key: str) -> tuple[int, str | None]:
            async with session.post(
                f"http://127.0.0.1:{port}/v1/track",
                json={"userId": "u1", "event": "E"},
                headers={"Authorization": basic(key)},
            ) as response:
                return response.status, response.headers.get("Retry-After")

        assert [await post(KEY) for _ in range(2)] == [(200, None), (200, None)]
        status, retry_after = await post(KEY)
        assert status == 429 and retry_after == "1"
        assert await post(other) == (200, None)  # per write key
        now[0] += 0.5
        assert await post(KEY) == (200, None)  # a token came back


def test_an_escaped_line_formats_under_the_workers_formatter_without_a_logging_error():
    """Faust's worker formats with mode's ExtensionFormatter, which turns a record's
    `args` of None into (None,): an escaped copy must carry no arguments at all, or
    every multi-line Faust message (recovery's tables) becomes a 'Logging error'."""
    from mode.utils.logging import ExtensionFormatter

    stream = io.StringIO()
    handler = RedactingStreamHandler(stream)
    handler.setFormatter(ExtensionFormatter(fmt="%(message)s", stream=stream))
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign]  # record instead of printing
    logger = logging.getLogger("test.escaped.mode")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("Highwater for %s changelog partitions:\n%s", "active", "| t | 0 | -1 |")
    finally:
        logger.removeHandler(handler)
    assert errors == []
    assert stream.getvalue() == "Highwater for active changelog partitions:\\n| t | 0 | -1 |\n"
