"""One receiving core, three ways in (issue 12): the bare core, the aiohttp sub-app on a real
localhost server, and the ASGI app mounted in a real FastAPI app under a real uvicorn server.
The same deliveries must get the same answers and cause the same dispatches everywhere."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from asgi_server import uvicorn_server
from eventually import eventually
from fastapi import FastAPI

import workflows_async as wa
from workflows_async.testing import generate_signing_key, public_key_pem, serve, sign_webhook
from workflows_async.webhooks import SIGNATURE_HEADER

KID = "0b7e3a52-3c1f-4f0e-9d8a-5e2f6c1a9b47"
KEY = generate_signing_key()
OTHER_KEY = generate_signing_key()
MAX_BODY = 2048

# (status, headers, body) -> (status, reason, allow header)
Send = Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, str, str | None]]]


def event(workflow_id: str, status: str = "COMPLETED", **extra: str) -> bytes:
    return json.dumps({"workflowId": workflow_id, "status": status, **extra}).encode()


def signed(body: bytes, key: object = KEY) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign_webhook(body, key, KID), "Content-Type": "application/json"}  # type: ignore[arg-type]


def new_session() -> wa.Session:
    return wa.Session(
        "https://api.example.test",
        webhook_keys={KID: public_key_pem(KEY)},
        max_webhook_body=MAX_BODY,
    )


BIG = event("wf-big", padding="x" * (MAX_BODY * 2))
DELIVERIES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("signed", "POST", signed(event("wf-1")), event("wf-1")),
    ("duplicate", "POST", signed(event("wf-1")), event("wf-1")),
    ("forged", "POST", signed(event("wf-2"), OTHER_KEY), event("wf-2")),
    ("altered", "POST", signed(event("wf-3")), event("wf-3", "FAILED")),
    ("unsigned", "POST", {"Content-Type": "application/json"}, event("wf-4")),
    ("oversized", "POST", signed(BIG), BIG),
    ("not an event", "POST", signed(b"[]"), b"[]"),
    ("not a POST", "GET", {}, b""),
    ("second event", "POST", signed(event("wf-5", "RUNNING")), event("wf-5", "RUNNING")),
]
EXPECTED = {
    "signed": (200, "accepted", None),
    "duplicate": (200, "accepted", None),
    "forged": (401, "signature does not match", None),
    "altered": (401, "signature does not match", None),
    "unsigned": (401, "missing JWS-SIGNATURE header", None),
    "oversized": (413, "body too large", None),
    "not an event": (400, "body is not a JSON object", None),
    "not a POST": (405, "only POST is accepted", "POST"),
    "second event": (200, "accepted", None),
}


@asynccontextmanager
async def core_way(session: wa.Session) -> AsyncIterator[Send]:
    core = session.webhook_core()

    async def send(
        method: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, str | None]:
        answer = await core.receive(method, headers, body)
        return answer.status, json.loads(answer.body)["reason"], answer.headers.get("Allow")

    yield send


async def over_http(url: str) -> AsyncIterator[Send]:
    async with aiohttp.ClientSession() as client:

        async def send(
            method: str, headers: dict[str, str], body: bytes
        ) -> tuple[int, str, str | None]:
            async with client.request(method, url, headers=headers, data=body) as response:
                reason = json.loads(await response.read())["reason"]
                return response.status, reason, response.headers.get("Allow")

        yield send


@asynccontextmanager
async def aiohttp_way(session: wa.Session) -> AsyncIterator[Send]:
    root = web.Application()
    root.add_subapp("/webhooks", session.webhook_app())
    async with serve(root) as served:
        async for send in over_http(f"{served.url}/webhooks"):
            yield send


@asynccontextmanager
async def asgi_way(session: wa.Session) -> AsyncIterator[Send]:
    api = FastAPI()
    webhooks = session.webhook_asgi()
    api.mount("/webhooks", webhooks)
    async with uvicorn_server(api) as base:
        async for send in over_http(f"{base}/webhooks/"):
            yield send


WAYS = {"core": core_way, "aiohttp": aiohttp_way, "asgi-fastapi-uvicorn": asgi_way}


@pytest.mark.parametrize("way", list(WAYS))
async def test_every_adapter_gives_the_same_answers_and_dispatches(way: str) -> None:
    session = new_session()
    dispatched: list[tuple[str, str]] = []
    session.on_event(lambda e: dispatched.append((e.workflow_id, e.status)))
    async with session, WAYS[way](session) as send:
        answers = {name: await send(m, h, b) for name, m, h, b in DELIVERIES}
        await eventually(lambda: len(dispatched) >= 2, "both events dispatched")
        await asyncio.sleep(0.1)  # a stray extra dispatch would show up by now
        stats = session.stats().webhooks
    assert answers == EXPECTED
    assert sorted(dispatched) == [("wf-1", "COMPLETED"), ("wf-5", "RUNNING")]
    # Counted once per delivery, in the core, whatever the adapter.
    assert (stats.accepted, stats.duplicates) == (2, 1)
    assert dict(stats.refused) == {
        "bad_signature": 3,
        "body_too_large": 1,
        "bad_event": 1,
        "method_not_allowed": 1,
    }
