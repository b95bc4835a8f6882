"""Retry-After parsing and status mapping never raise, whatever the header holds (Hypothesis),
and no public Session method lets anything but a WorkflowsError out, whatever a server sends
(hostile raw answers from a real localhost socket)."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from fake_time import FakeTime
from hypothesis import given, settings
from hypothesis import strategies as st

import workflows_async as wa
from workflows_async import errors
from workflows_async._api_errors import error_for_status
from workflows_async._retry import parse_retry_after

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
WF_ID = "9b2f7d4e-1c3a-4b5d-8e6f-7a8b9c0d1e2f"
CASE_ID = "6f1c9a52-0b7e-4c8e-9a51-3f2d6f0e8a11"
KID = "0f0e0d0c-0b0a-4908-8706-050403020100"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.01", 0.01),
        (" 2.5 ", 2.5),
        ("7", 7.0),
        ("0", 0.0),
        ("²", None),  # str.isdigit() says yes; float() says no
        ("٣", None),  # an Arabic-Indic digit
        ("NaN", None),
        ("nan", None),
        ("inf", None),
        ("-1", None),
        ("-0.5", None),
        ("1e3", None),
        ("1.", None),
        (".5", None),
        ("9" * 400, None),  # beyond a float: infinity
        ("0x10", None),
        ("1_000", None),
        ("Sun, 29 Nov 2026 12:00:30 GMT", 30.0),
        (
            "Sun, 29 Nov 9999 12:00:30 GMT",
            (datetime(9999, 11, 29, 12, 0, 30, tzinfo=UTC) - NOW).total_seconds(),
        ),
        ("Sun, 29 Nov 0001 12:00:30 GMT", 0.0),
        ("Sun, 99 Nov 2026 12:00:30 GMT", None),
    ],
)
def test_parse_retry_after_values(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


# Arbitrary text, and text made of what looks like a number to a careless parser.
HEADER_VALUES = st.one_of(st.text(), st.from_regex(r"\A[0-9.\-+eE ²³¹٠-٩]{0,12}\Z"))


@settings(max_examples=500, deadline=None)
@given(HEADER_VALUES)
def test_parse_retry_after_never_raises(value: str) -> None:
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(min_value=100, max_value=999),
    retry_after=HEADER_VALUES,
    request_id=st.text(),
    body=st.binary(max_size=600),
)
def test_error_for_status_never_raises(
    status: int, retry_after: str, request_id: str, body: bytes
) -> None:
    headers = {"Retry-After": retry_after, "X-Request-Id": request_id}
    error = error_for_status(status, method="GET", path="/x", headers=headers, body=body)
    assert (error is None) == (200 <= status < 300)


# -- hostile answers from a real socket -------------------------------------------------------

HOSTILE: dict[str, bytes] = {
    "superscript retry-after on 503": (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: \xc2\xb2\r\nContent-Length: 0\r\n\r\n"
    ),
    "NaN retry-after on 429": (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: NaN\r\nContent-Length: 0\r\n\r\n"
    ),
    "latin-1 retry-after": b"HTTP/1.1 503 x\r\nRetry-After: \xff\xfe\r\nContent-Length: 0\r\n\r\n",
    "garbage gzip": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 10\r\n\r\nnot-gzip!!"
    ),
    "body cut short": b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id": "x',
    "not utf-8 body": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n\xff\xfe\xfd\xfc\xfb",
    "bad chunk size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    ),
    "bad status line": b"HTTP/1.1 abc\r\n\r\n",
    "status 999": b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\n{}",
    "negative content-length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
    "nul in a header": b"HTTP/1.1 200 OK\r\nX-Request-Id: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    "redirect to a weird url": (
        b"HTTP/1.1 302 Found\r\nLocation: http://[::1/\xff\r\nContent-Length: 0\r\n\r\n"
    ),
    "not http at all": b"\x16\x03\x01\x00\xa5garbage\r\n\r\n",
    "closed at once": b"",
    "json with a lone surrogate": (
        b'HTTP/1.1 200 OK\r\nContent-Length: 32\r\n\r\n{"id": "\\ud800", "status": "X"}'
    ),
}


class RawServer:
    """Answers every request on a localhost socket with the same raw bytes, then closes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            writer.write(self.answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            self.server.close()
            await self.server.wait_closed()


def public_calls(session: wa.Session) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "get_workflow": lambda: session.get_workflow(WF_ID),
        "get_result": lambda: session.get_result(WF_ID),
        "run_workflow": lambda: session.run_workflow(CASE_ID, "kyc"),
        "create_case": lambda: session.create_case(first_name="Ann"),
        "create_parameters": lambda: session.create_parameters("kyc", {"a": 1}),
        "get_webhook_key": lambda: session.get_webhook_key(KID),
        "wait": lambda: session.wait(WF_ID, timeout=0.3),
    }


@pytest.mark.parametrize("answer", list(HOSTILE.values()), ids=list(HOSTILE))
@pytest.mark.parametrize("auth", ["token", "key"])
async def test_hostile_answers_only_ever_raise_workflows_errors(answer: bytes, auth: str) -> None:
    policy = wa.RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002, max_time=2)
    async with RawServer(answer).running() as url:
        credentials: wa.Auth = wa.TokenAuth("t") if auth == "token" else wa.KeySecretAuth("k", "s")
        session = wa.Session(url, credentials, allow_insecure_http=True, retry=policy, timeout=2)
        async with FakeTime().install(session):  # retry waits recorded, not slept
            for name, call in public_calls(session).items():
                try:
                    async with asyncio.timeout(20):
                        await call()
                except errors.WorkflowsError:
                    pass
                except BaseException as exc:  # pragma: no cover - the failure being tested
                    pytest.fail(f"{name} let {type(exc).__name__} out: {exc!r}")
