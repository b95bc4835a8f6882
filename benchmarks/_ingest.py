"""Benchmark 2: signed webhooks per second through the sub-app, next to a bare aiohttp handler;
and through the ASGI app in FastAPI under uvicorn, next to a bare FastAPI route.

A helper process serves one aiohttp application with two sub-apps: ``/webhooks/`` is
``Session.webhook_app()`` (verify RS256 over the raw body, parse, publish to the waiters) and
``/plain/`` a handler that reads the body and answers the same 200 bytes without looking at
them. This process sends both exactly the same requests (distinct signed events, so duplicate
filtering never shortcuts the work) over raw keep-alive connections that cost almost nothing,
so the helper's core is the bottleneck. Repetitions rotate the targets.

The *ingest floor* is a third sub-app, ``/floor/``, in the same process: it reads the body and
verifies its RS256 signature once (RSA-2048, through ``cryptography`` directly, the key loaded
once), then answers the same 200 bytes. No receiver can do less and still check signatures;
the library's CPU per webhook is shown as a ratio to it (paired per repetition).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from _proc import Child, Ready
from _rawhttp import RawConnection, request_bytes
from _report import Mode, Row, Section, judge, median, paired
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

import workflows_async as wa
from workflows_async.testing import generate_signing_key, public_key_pem, serve, sign_webhook

__all__ = ["asgi_webhook_server", "run", "signed_events", "webhook_request", "webhook_server"]

CONNECTIONS = 16
ACCEPTED = json.dumps({"status": 200, "reason": "accepted"}).encode()  # what the receiver says


def signed_events(
    count: int, kid: str, key: Any, workflow_ids: list[str] | None = None
) -> list[tuple[str, bytes, str]]:
    """``count`` terminal events as the platform sends them: (workflow id, body, signature)."""
    events = []
    for index in range(count):
        workflow_id = workflow_ids[index] if workflow_ids else str(uuid.uuid4())
        body = json.dumps(
            {
                "eventId": str(uuid.uuid4()),
                "eventType": "WORKFLOW_COMPLETED",
                "workflowId": workflow_id,
                "caseId": str(uuid.uuid4()),
                "status": "COMPLETED",
                "timestamp": datetime.now(UTC).isoformat(),
            },
            separators=(",", ":"),
        ).encode()
        events.append((workflow_id, body, sign_webhook(body, key, kid)))
    return events


def webhook_request(host: str, path: str, body: bytes, signature: str) -> bytes:
    headers = {"Content-Type": "application/json", "JWS-SIGNATURE": signature}
    return request_bytes("POST", host, path, body, headers)


@asynccontextmanager
async def webhook_server(config: dict[str, Any]) -> AsyncIterator[Ready]:
    """Role ``webhooks``: the Session's sub-app at /webhooks/ and a bare one at /plain/."""
    session = wa.Session(
        "http://127.0.0.1:9",  # never called: the signing key is pinned
        wa.TokenAuth("unused"),
        allow_insecure_http=True,
        webhook_keys={config["kid"]: config["pem"]},
    )

    async def plain_handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ACCEPTED, content_type="application/json")

    plain = web.Application()
    plain.router.add_post("/", plain_handler)
    public = serialization.load_pem_public_key(config["pem"].encode())
    assert isinstance(public, rsa.RSAPublicKey)

    async def floor_handler(request: web.Request) -> web.Response:
        body = await request.read()
        header, _, signature = request.headers["JWS-SIGNATURE"].partition("..")
        signing_input = f"{header}.{_b64(body)}".encode()
        public.verify(_unb64(signature), signing_input, padding.PKCS1v15(), hashes.SHA256())
        return web.Response(body=ACCEPTED, content_type="application/json")

    floor = web.Application()
    floor.router.add_post("/", floor_handler)
    app = web.Application()
    app.add_subapp("/webhooks", session.webhook_app())
    app.add_subapp("/plain", plain)
    app.add_subapp("/floor", floor)

    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"unknown command {command!r}")

    try:
        async with serve(app) as served:
            yield {"port": served.port}, handle
    finally:
        await session.close()


@asynccontextmanager
async def asgi_webhook_server(config: dict[str, Any]) -> AsyncIterator[Ready]:
    """Role ``asgi-webhooks``: a FastAPI app under uvicorn with ``Session.webhook_asgi()``
    mounted at /webhooks/ and a bare route at /plain/ that reads the body and answers the
    same 200 bytes."""
    import uvicorn
    from fastapi import FastAPI, Request, Response

    session = wa.Session(
        "http://127.0.0.1:9",  # never called: the signing key is pinned
        wa.TokenAuth("unused"),
        allow_insecure_http=True,
        webhook_keys={config["kid"]: config["pem"]},
    )
    api = FastAPI()
    api.mount("/webhooks", session.webhook_asgi())

    async def plain(request: Request) -> Response:
        await request.body()
        return Response(ACCEPTED, media_type="application/json")

    # add_route, not @api.post: the annotations here are strings (PEP 563) naming local imports,
    # which FastAPI's dependency injection cannot resolve; a plain route has none to resolve.
    api.add_route("/plain/", plain, methods=["POST"])

    server = uvicorn.Server(
        uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]

    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"unknown command {command!r}")

    try:
        yield {"port": port}, handle
    finally:
        server.should_exit = True
        await serving
        await session.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _blast(port: int, requests: list[bytes]) -> int:
    """Send every request over CONNECTIONS connections; the number of non-200 answers."""
    connections = [await RawConnection.open("127.0.0.1", port) for _ in range(CONNECTIONS)]
    pending = iter(requests)
    failed = 0

    async def worker(connection: RawConnection) -> None:
        nonlocal failed
        for request in pending:
            if await connection.send(request) != 200:
                failed += 1

    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        for connection in connections:
            await connection.close()
    return failed


async def _compare(
    mode: Mode, role: str, paths: dict[str, str]
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Rate (/s) and receiver CPU per request (us) of each target in each repetition (the
    targets in a rotating order), and the failures."""
    key, kid = generate_signing_key(), str(uuid.uuid4())
    total = mode.ingest_requests * (mode.ingest_reps + 1)
    events = signed_events(total, kid, key)
    names = list(paths)
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    failures = 0
    async with await Child.start(role, {"kid": kid, "pem": public_key_pem(key)}) as server:
        port = server.info["port"]
        host = f"127.0.0.1:{port}"
        for rep in range(mode.ingest_reps + 1):  # repetition 0 warms up and is not counted
            batch = events[rep * mode.ingest_requests : (rep + 1) * mode.ingest_requests]
            for target in names[rep % len(names) :] + names[: rep % len(names)]:
                path = paths[target]
                requests = [webhook_request(host, path, body, sig) for _, body, sig in batch]
                cpu_before = await server.cpu()
                started = time.perf_counter()
                failures += await _blast(port, requests)
                seconds = time.perf_counter() - started
                cpu_seconds = await server.cpu() - cpu_before
                if rep:
                    rates[target].append(len(requests) / seconds)
                    cpus[target].append(cpu_seconds / len(requests) * 1e6)
    return rates, cpus, failures


async def run(mode: Mode) -> Section:
    section = Section(2, "webhook ingest: verify RS256 + parse + dispatch, per second")
    paths = {"sub-app": "/webhooks/", "floor": "/floor/", "bare": "/plain/"}
    rates, cpus, failures = await _compare(mode, "webhooks", paths)
    rate = {name: median(values) for name, values in rates.items()}
    cpu = {name: median(values) for name, values in cpus.items()}
    capacity = {name: 1e6 / value for name, value in cpu.items()}
    vs_bare = tuple(paired(rates["sub-app"], rates["bare"]))
    vs_floor = tuple(paired(cpus["sub-app"], cpus["floor"]))
    floor_rate = tuple(paired(rates["sub-app"], rates["floor"]))
    asgi_paths = {"asgi": "/webhooks/", "bare route": "/plain/"}
    asgi_rates, asgi_cpus, asgi_failures = await _compare(mode, "asgi-webhooks", asgi_paths)
    asgi_rate = {name: median(values) for name, values in asgi_rates.items()}
    asgi_cpu = {name: median(values) for name, values in asgi_cpus.items()}
    section.rows += [
        Row("webhooks/s through the sub-app (wall)", rate["sub-app"], "/s",
            "bare handler", rate["bare"], ">= 0.7x", judge(vs_bare, 0.7, at_least=True) == "met",
            verdict=judge(vs_bare, 0.7, at_least=True), ratios=vs_bare),
        Row("ingest floor: bare handler + one RSA-2048 verify (wall)", rate["floor"], "/s",
            "bare handler", rate["bare"], ratios=tuple(paired(rates["floor"], rates["bare"]))),
        Row("webhooks/s through the sub-app vs the floor (wall)", rate["sub-app"], "/s",
            "ingest floor", rate["floor"], ratios=floor_rate),
        Row("receiver CPU per webhook", cpu["sub-app"], "us", "ingest floor", cpu["floor"],
            "<= 1.2x floor", judge(vs_floor, 1.2) == "met", verdict=judge(vs_floor, 1.2),
            ratios=vs_floor,
            note=f"capacity {capacity['sub-app']:,.0f}/s vs floor {capacity['floor']:,.0f}/s"
            f" vs bare {capacity['bare']:,.0f}/s per core"),
        Row("ingest floor CPU per webhook", cpu["floor"], "us", "bare handler", cpu["bare"],
            ratios=tuple(paired(cpus["floor"], cpus["bare"]))),
        Row("webhooks/s, ASGI app in FastAPI/uvicorn", asgi_rate["asgi"], "/s",
            "bare FastAPI route", asgi_rate["bare route"],
            ratios=tuple(paired(asgi_rates["asgi"], asgi_rates["bare route"])),
            note=f"CPU {asgi_cpu['asgi']:,.0f} vs {asgi_cpu['bare route']:,.0f} us per webhook"),
        Row("refused webhooks (non-200)", failures + asgi_failures, "", goal="0",
            met=failures + asgi_failures == 0),
    ]  # fmt: skip
    section.notes.append(
        f"{mode.ingest_reps} rotating repetitions x {mode.ingest_requests} distinct signed"
        f" events per target, {CONNECTIONS} keep-alive connections; receiver in its own process"
        " (aiohttp; then FastAPI under uvicorn for the ASGI row)."
    )
    return section
