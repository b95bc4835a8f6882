"""The ASGI webhook app and the mount mistakes around it (issue 12): paths with and without the
trailing slash, streamed bodies over the limit, disconnects, lifespan, other scopes; the aiohttp
sub-app called as ASGI and the ASGI app handed to aiohttp fail with a ConfigurationError that
names the right method."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from asgi_server import uvicorn_server
from fastapi import FastAPI

import workflows_async as wa
from workflows_async.testing import generate_signing_key, public_key_pem, sign_webhook
from workflows_async.webhooks import SIGNATURE_HEADER

KID = "0b7e3a52-3c1f-4f0e-9d8a-5e2f6c1a9b47"
KEY = generate_signing_key()
BODY = b'{"workflowId": "wf-1", "status": "COMPLETED"}'
HEADERS = {SIGNATURE_HEADER: sign_webhook(BODY, KEY, KID)}


def new_session(max_body: int = 1 << 20) -> wa.Session:
    return wa.Session(
        "https://api.example.test",
        webhook_keys={KID: public_key_pem(KEY)},
        max_webhook_body=max_body,
    )


async def test_fastapi_mount_plus_route_answers_with_and_without_the_slash() -> None:
    async with new_session() as session:
        api = FastAPI()
        webhooks = session.webhook_asgi()
        api.mount("/webhooks", webhooks)
        api.add_route("/webhooks", webhooks)  # type: ignore[arg-type]  # no 307 without the slash
        async with uvicorn_server(api) as base, aiohttp.ClientSession() as client:
            for path in ("/webhooks", "/webhooks/"):
                async with client.post(base + path, data=BODY, headers=HEADERS) as response:
                    assert response.status == 200, path
            async with client.get(base + "/webhooks") as response:
                assert response.status == 405
                assert response.headers["Allow"] == "POST"


async def test_a_streamed_body_over_the_limit_is_refused_while_reading() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 1024  # chunked: no Content-Length to refuse it up front

    async with new_session(max_body=4096) as session:
        api = FastAPI()
        api.mount("/webhooks", session.webhook_asgi())
        async with uvicorn_server(api) as base, aiohttp.ClientSession() as client:
            async with client.post(f"{base}/webhooks/", data=chunks(), headers=HEADERS) as r:
                assert r.status == 413
                assert json.loads(await r.read())["reason"] == "body too large"
            async with client.post(f"{base}/webhooks/", data=BODY, headers=HEADERS) as r:
                assert r.status == 200  # the server is fine afterwards


class Recorder:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.incoming = messages
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))


def http_scope(method: str = "POST") -> dict[str, Any]:
    headers = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
    return {"type": "http", "method": method, "path": "/", "headers": headers}


async def test_a_client_gone_before_the_body_is_complete_gets_400() -> None:
    async with new_session() as session:
        app = session.webhook_asgi()
        io = Recorder(
            [
                {"type": "http.request", "body": BODY[:5], "more_body": True},
                {"type": "http.disconnect"},
            ]
        )
        await app(http_scope(), io.receive, io.send)
    assert io.sent[0]["status"] == 400
    assert (b"connection", b"close") in io.sent[0]["headers"]


async def test_the_body_arriving_in_pieces_is_joined() -> None:
    async with new_session() as session:
        app = session.webhook_asgi()
        parts = [
            {"type": "http.request", "body": BODY[i : i + 7], "more_body": True}
            for i in range(0, len(BODY), 7)
        ]
        io = Recorder([*parts, {"type": "http.request", "body": b"", "more_body": False}])
        await app(http_scope(), io.receive, io.send)
    assert io.sent[0]["status"] == 200
    assert json.loads(io.sent[1]["body"]) == {"status": 200, "reason": "accepted"}


async def test_lifespan_is_answered_and_other_scopes_are_refused() -> None:
    async with new_session() as session:
        app = session.webhook_asgi()
        io = Recorder([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        await app({"type": "lifespan"}, io.receive, io.send)
        assert [m["type"] for m in io.sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        ws = Recorder([{"type": "websocket.connect"}])
        await app({"type": "websocket"}, ws.receive, ws.send)
        assert ws.sent == [{"type": "websocket.close", "code": 1003}]
        with pytest.raises(wa.ConfigurationError, match="HTTP only"):
            await app({"type": "mqtt"}, io.receive, io.send)


async def test_the_asgi_app_served_directly_by_uvicorn_handles_lifespan() -> None:
    async with new_session() as session:
        app = session.webhook_asgi()
        async with uvicorn_server(app) as base, aiohttp.ClientSession() as client:
            response = await client.post(base + "/", data=BODY, headers=HEADERS)
            assert response.status == 200
            response.release()


# -- mount mistakes ----------------------------------------------------------------------------


async def test_the_aiohttp_sub_app_mounted_in_fastapi_names_webhook_asgi() -> None:
    async with new_session() as session:
        api = FastAPI()
        api.mount("/webhooks", session.webhook_app())  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            with pytest.raises(wa.ConfigurationError, match=r"session\.webhook_asgi\(\)"):
                await client.post("/webhooks/", content=BODY, headers=HEADERS)


async def test_the_aiohttp_sub_app_stays_usable_the_aiohttp_way() -> None:
    async with new_session() as session:
        sub = session.webhook_app()
        assert sub() is sub  # aiohttp's own gunicorn-compatible call
        root = web.Application()
        root.add_subapp("/webhooks", sub)
        async with TestClient(TestServer(root)) as client:
            for path in ("/webhooks", "/webhooks/"):
                response = await client.post(path, data=BODY, headers=HEADERS)
                assert response.status == 200, path
            response = await client.put("/webhooks")
            assert response.status == 405
            assert response.headers["Allow"] == "POST"


async def test_the_asgi_app_given_to_aiohttp_add_subapp_fails_at_mount_time() -> None:
    async with new_session() as session:
        root = web.Application()
        with pytest.raises(wa.ConfigurationError, match=r"session\.webhook_app\(\)"):
            root.add_subapp("/webhooks", session.webhook_asgi())  # type: ignore[arg-type]


async def test_the_asgi_app_used_as_an_aiohttp_handler_fails_on_the_first_request() -> None:
    async with new_session() as session:
        handler: Any = session.webhook_asgi()
        with pytest.raises(wa.ConfigurationError, match=r"session\.webhook_app\(\)"):
            await handler(object())  # what aiohttp does: handler(request)
