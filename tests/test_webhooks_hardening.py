"""The webhook endpoint under hostile input, through a real localhost server (issue 10, items
12 and the 'never 500' rule): every answer is one of a known set, never a 500."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import workflows_async as wa
from workflows_async.events import WebhookEvent
from workflows_async.keys import KeyStore, WebhookVerifier
from workflows_async.testing import generate_signing_key, public_key_pem, sign_webhook
from workflows_async.webhooks import SIGNATURE_HEADER, WebhookReceiver

ALLOWED = {200, 400, 401, 405, 408, 413, 503}
KID = "0b7e3a52-3c1f-4f0e-9d8a-5e2f6c1a9b47"
KEY = generate_signing_key()
SECRET = "PERSONAL-19121210-1234"  # body content that must never reach a log line
Client = TestClient[web.Request, web.Application]


@asynccontextmanager
async def session_server(read_timeout: float = 0.5) -> AsyncIterator[Client]:
    """A Session (pinned key, no network) with its sub-app mounted at /webhooks/."""
    session = wa.Session("https://api.example.test", webhook_keys={KID: public_key_pem(KEY)})
    root = web.Application()
    root.add_subapp("/webhooks", session.webhook_app(read_timeout=read_timeout))
    async with session, TestClient(TestServer(root)) as client:
        yield client


async def raw_request(client: Client, head: bytes, body_parts: list[bytes], gap: float) -> bytes:
    """Send ``head`` then ``body_parts`` with ``gap`` seconds between them over a raw socket,
    stopping once the server has closed; return everything the server sent."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    answer = asyncio.create_task(reader.read())  # until the server closes
    try:
        writer.write(head)
        await writer.drain()
        for part in body_parts:
            await asyncio.sleep(gap)
            if answer.done():
                break
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                break
        async with asyncio.timeout(20):
            return await answer
    finally:
        answer.cancel()
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def signed(body: bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign_webhook(body, KEY, KID), "Content-Type": "application/json"}


HOSTILE_BODIES = [
    b"[" * 100_000,  # RecursionError in the JSON parser
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"workflowId": "A", "workflow": {"id": "B", "status": "COMPLETED"}}',
    b'{"workflowId": ' + b"9" * 5000 + b', "status": "COMPLETED"}',  # int digit limit
    b'{"workflowId": "w", "status": NaN}',
    b"\xff\xfe\x00garbage",
    b'{"workflowId": "w", "status": "COMPLETED", "x": "\\ud800"}',
    b"",
    b"null",
    b'{"workflowId": "w-' + SECRET.encode() + b'", "status": "COMPLETED"}',
]


async def test_hostile_bodies_never_get_a_500(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="workflows_async")
    async with session_server() as client:
        answers = []
        for body in HOSTILE_BODIES:
            async with client.post("/webhooks/", data=body, headers=signed(body)) as r:
                answers.append(r.status)
                assert json.loads(await r.text())["reason"]
        assert set(answers) <= ALLOWED, answers
        assert answers[0] == answers[1] == 400  # deep nesting is a bad event, not a 500
        assert answers[2] == 400
        for header in ["", "x", "a..b", ".." * 3000, "é..é"]:
            async with client.post(
                "/webhooks/", data=b"{}", headers={SIGNATURE_HEADER: header}
            ) as r:
                assert r.status == 401
        async with client.get("/webhooks/") as r:
            assert r.status == 405
        async with client.post("/webhooks/", data=b"x" * (2 << 20), headers=signed(b"x")) as r:
            assert r.status == 413
    assert SECRET not in caplog.text


async def test_missing_signature_is_refused_before_the_body_is_read() -> None:
    async with session_server(read_timeout=30) as client:
        head = (
            b"POST /webhooks/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500000\r\n\r\n"
        )
        # No body byte is ever sent: the answer can only come from the headers.
        response = await raw_request(client, head, [], 0)
        assert status_of(response) == 401
        bad = head.replace(b"Content-Length", b"JWS-SIGNATURE: e30..AAAA\r\nContent-Length")
        assert status_of(await raw_request(client, bad, [], 0)) == 401


async def test_a_trickling_body_is_cut_off_after_the_read_deadline() -> None:
    async with session_server(read_timeout=0.5) as client:
        body = b'{"workflowId": "w", "status": "COMPLETED"}'
        head = (
            b"POST /webhooks/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"{SIGNATURE_HEADER}: {sign_webhook(body, KEY, KID)}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        parts = [body[i : i + 1] for i in range(len(body))]
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Twenty slow connections at once, one byte every 0.2 s (the whole body needs ~9 s).
        responses = await asyncio.gather(
            *(raw_request(client, head, parts, 0.2) for _ in range(20))
        )
        assert {status_of(r) for r in responses} == {408}
        assert loop.time() - started < 8  # each was closed well before its body could finish


async def test_broken_chunked_encoding_is_a_400() -> None:
    async with session_server() as client:
        body = b'{"workflowId": "w", "status": "COMPLETED"}'
        head = (
            b"POST /webhooks/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + f"{SIGNATURE_HEADER}: {sign_webhook(body, KEY, KID)}\r\n\r\n".encode()
        )
        response = await raw_request(client, head, [b"5\r\nab\r\nzz\r\n0\r\n\r\n"], 0)
        assert status_of(response) in {400} | (ALLOWED - {200})


async def test_an_unexpected_error_is_a_503_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def explode(event: WebhookEvent) -> bool:
        raise RuntimeError(f"bug while handling {event.raw!r}")

    verifier = WebhookVerifier(KeyStore(None, pinned={KID: public_key_pem(KEY)}))
    root = web.Application()
    root.add_subapp("/webhooks", WebhookReceiver(verifier, explode).app())
    body = b'{"workflowId": "w-' + SECRET.encode() + b'", "status": "COMPLETED"}'
    with caplog.at_level(logging.INFO, logger="workflows_async"):
        async with (
            TestClient(TestServer(root)) as client,
            client.post("/webhooks/", data=body, headers=signed(body)) as r,
        ):
            assert r.status == 503
            assert "RuntimeError" in json.loads(await r.text())["reason"]
    assert "RuntimeError" in caplog.text
    assert SECRET not in caplog.text


def test_read_timeout_must_be_positive() -> None:
    async def publish(event: WebhookEvent) -> bool:
        return True

    with pytest.raises(wa.ConfigurationError):
        WebhookReceiver(None, publish, read_timeout=0)
