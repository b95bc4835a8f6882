"""The Simulator, driven with plain ``aiohttp.ClientSession`` over real localhost sockets.

Webhooks are collected by a small receiver app on its own free port; signatures are checked with
``cryptography`` directly against the PEM the key endpoint serves, never with our own verifier.
Randomness is seeded; share knobs are tested at 0.0, 1.0 and one seeded middle value.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from eventually import eventually

import workflows_async.testing as testing
from workflows_async.testing import (
    BUILTIN_DEFINITIONS,
    Faults,
    Simulator,
    WorkflowDefinition,
    generate_signing_key,
)
from workflows_async.testing._state import SimState
from workflows_async.testing._wire import Reject, negotiate_version

KEY = generate_signing_key()  # one key for the module: key generation is the slow part
JSON = "application/json"
CREDENTIALS = {"key": "test-key", "secret": "test-secret"}


# -- helpers ----------------------------------------------------------------------------------
def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(pem: str, signature: str, body: bytes) -> dict[str, Any]:
    """Check a detached JWS with ``cryptography`` alone; return its protected header."""
    encoded_header, payload, encoded_signature = signature.split(".")
    assert payload == ""
    header: dict[str, Any] = json.loads(b64url_decode(encoded_header))
    assert header["alg"] == "RS256"
    if header.get("b64", True):
        content = base64.urlsafe_b64encode(body).rstrip(b"=")
    else:
        assert header["crit"] == ["b64"]
        content = body
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        b64url_decode(encoded_signature),
        encoded_header.encode() + b"." + content,
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    return header


@dataclass
class Hook:
    body: bytes
    signature: str
    at: float

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    """A webhook endpoint: records what arrives, answers from ``script`` (then 200)."""

    url: str = ""
    hooks: list[Hook] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    delay: float = 0.0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.hooks.append(Hook(body, request.headers.get("JWS-SIGNATURE", ""), time.monotonic()))
        self.arrived.set()
        return web.Response(status=self.script.pop(0) if self.script else 200)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Hook]:
        async with asyncio.timeout(timeout):
            while len(self.hooks) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.hooks

    @property
    def events(self) -> list[dict[str, Any]]:
        return [hook.event for hook in self.hooks]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rx.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rx.url = str(server.make_url("/hook"))
    yield rx
    await server.close()


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any


class Api:
    """A bare client for the simulated API."""

    def __init__(self, http: aiohttp.ClientSession, token: str = "") -> None:
        self.http, self.token = http, token

    async def login(self) -> Api:
        reply = await self.call("POST", "/auth/authorize", CREDENTIALS)
        assert reply.status == 200, reply.body
        self.token = reply.body["accessToken"]
        return self

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = {"Accept": JSON}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if body is not None or raw is not None:
            sent["Content-Type"] = JSON
        sent.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with self.http.request(method, path, data=data, headers=sent) as response:
            text = await response.text()
            is_json = response.content_type == JSON
            return Reply(response.status, response.headers, json.loads(text) if is_json else text)

    async def new_case(self, **fields: str) -> str:
        reply = await self.call("POST", "/cases", fields)
        assert reply.status == 201, reply.body
        case_id: str = reply.body["id"]
        return case_id

    async def run(self, definition: str = "kyc-basic", **extra: str) -> dict[str, Any]:
        case_id = await self.new_case(firstName="Ada")
        body = {"caseId": case_id, "workflowDefinitionId": definition, **extra}
        reply = await self.call("POST", "/workflows/run", body)
        assert reply.status == 201, reply.body
        workflow: dict[str, Any] = reply.body
        return workflow


@asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[tuple[Simulator, Api]]:
    """A started Simulator (fast by default) and a logged-in client for it."""
    options = {
        "time_scale": 0.01,
        "webhook_timeout": 100.0,
        "seed": 1,
        "signing_key": KEY,
        **options,
    }
    async with (
        Simulator(**options) as sim,
        aiohttp.ClientSession(sim.base_url) as http,
    ):
        yield sim, await Api(http).login()


# -- auth -------------------------------------------------------------------------------------
async def test_authorize_issues_tokens_and_refuses_wrong_credentials() -> None:
    async with serve() as (_, api):
        good = await api.call("POST", "/auth/authorize", CREDENTIALS)
        assert good.status == 200
        assert set(good.body) == {"accessToken", "refreshToken", "expiryDuration", "tokenType"}
        assert good.body["tokenType"] == "Bearer" and good.body["expiryDuration"] == 3600
        assert good.body["accessToken"] != api.token
        wrong = await api.call("POST", "/auth/authorize", {**CREDENTIALS, "secret": "nope"})
        assert wrong.status == 401 and wrong.body["error"] == "invalid_credentials"
        assert "nope" not in json.dumps(wrong.body)
        wrong_key = await api.call("POST", "/auth/authorize", {**CREDENTIALS, "key": "x"})
        assert wrong_key.status == 401
        missing = await api.call("POST", "/auth/authorize", {"key": "test-key"})
        assert missing.status == 400 and missing.body["error"] == "missing_field"


@pytest.mark.parametrize(
    ("authorization", "error"),
    [(None, "missing_token"), ("Bearer nope", "invalid_token"), ("Basic abc", "invalid_token")],
)
async def test_calls_need_a_valid_bearer_token(authorization: str | None, error: str) -> None:
    async with serve() as (sim, api):
        api.token = ""
        headers = {"Authorization": authorization} if authorization else {}
        reply = await api.call("POST", "/cases", {}, headers=headers)
        assert reply.status == 401
        assert reply.body == {"error": error, "message": reply.body["message"]}
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert uuid.UUID(reply.headers["X-Request-Id"])
        assert not sim.workflows and sim.requests[-1].status == 401


async def test_access_tokens_expire_and_refresh_tokens_renew_them() -> None:
    async with serve(token_ttl=0.25) as (_, api):
        tokens = (await api.call("POST", "/auth/authorize", CREDENTIALS)).body
        assert tokens["expiryDuration"] == 0.25
        api.token = tokens["accessToken"]
        assert (await api.call("POST", "/cases", {})).status == 201
        await asyncio.sleep(0.3)
        expired = await api.call("POST", "/cases", {})
        assert expired.status == 401 and expired.body["error"] == "token_expired"
        refreshed = await api.call(
            "POST", "/auth/refresh", {"refreshToken": tokens["refreshToken"]}
        )
        assert refreshed.status == 200 and refreshed.body["tokenType"] == "Bearer"
        api.token = refreshed.body["accessToken"]
        assert (await api.call("POST", "/cases", {})).status == 201
        unknown = await api.call("POST", "/auth/refresh", {"refreshToken": "made-up"})
        assert unknown.status == 401


async def test_issue_expired_tokens_issues_dead_tokens() -> None:
    async with serve(faults=Faults(issue_expired_tokens=True)) as (_, api):
        tokens = (await api.call("POST", "/auth/authorize", CREDENTIALS)).body
        assert tokens["expiryDuration"] == 3600
        api.token = tokens["accessToken"]
        assert (await api.call("POST", "/cases", {})).body["error"] == "token_expired"


# -- the happy path and the result ------------------------------------------------------------
async def test_case_parameters_run_status_and_result() -> None:
    extra = WorkflowDefinition(duration=0.5, result={"riskScore": 7, "decision": "approve"})
    async with serve(definitions={"kyc-scored": extra}) as (sim, api):
        case = await api.call("POST", "/cases", {"firstName": "Ada", "email": "a@example.test"})
        assert case.status == 201 and uuid.UUID(case.body["id"]).version == 4
        assert case.body["firstName"] == "Ada" and case.body["lastName"] is None
        params = await api.call(
            "POST",
            "/parameters",
            {"workflowDefinitionId": "kyc-scored", "parameters": {"level": 2, "tags": ["a"]}},
        )
        assert params.status == 201 and params.body["parameters"] == {"level": 2, "tags": ["a"]}
        run = await api.call(
            "POST",
            "/workflows/run",
            {
                "caseId": case.body["id"],
                "workflowDefinitionId": "kyc-scored",
                "parametersId": params.body["id"],
            },
        )
        assert run.status == 201
        assert run.body == {
            "id": run.body["id"],
            "caseId": case.body["id"],
            "status": "IN_PROGRESS",
        }
        workflow_id = run.body["id"]
        early = await api.call("GET", f"/workflows/{workflow_id}/result")
        assert early.status == 409 and early.body["error"] == "result_not_ready"
        await sim.wait_idle(timeout=5)
        status = await api.call("GET", f"/workflows/{workflow_id}")
        assert status.body == {"id": workflow_id, "caseId": case.body["id"], "status": "COMPLETED"}
        result = (await api.call("GET", f"/workflows/{workflow_id}/result")).body
        assert datetime.fromisoformat(result["createdDate"]).tzinfo is not None
        assert result["caseId"] == case.body["id"] and uuid.UUID(result["partyId"])
        assert result["case"] == case.body
        assert result["parameters"] == {"level": 2, "tags": ["a"]}
        assert result["riskScore"] == 7 and result["decision"] == "approve"
        assert sim.workflow_status(workflow_id) == "COMPLETED"


@pytest.mark.parametrize("definition_id", sorted(BUILTIN_DEFINITIONS))
async def test_builtin_definitions_walk_their_statuses(definition_id: str) -> None:
    definition = BUILTIN_DEFINITIONS[definition_id]
    async with serve() as (sim, api):
        workflow = await api.run(definition_id)
        first = definition.statuses[-1] if definition.terminal_on_run else definition.statuses[0]
        assert workflow["status"] == first
        await sim.wait_idle(timeout=5)
        info = sim.workflows[workflow["id"]]
        expected = definition.statuses[-1:] if definition.terminal_on_run else definition.statuses
        assert tuple(status for status, _ in info.history) == expected
        assert info.final and info.definition_id == definition_id
        assert (await api.call("GET", f"/workflows/{workflow['id']}/result")).status == 200


async def test_time_scale_makes_a_long_workflow_fast_with_evenly_spaced_statuses() -> None:
    slow = WorkflowDefinition(("IN_PROGRESS", "AWAITING", "COMPLETED"), duration=600.0)
    async with serve(time_scale=0.0005, definitions={"slow": slow}) as (sim, api):
        started = time.monotonic()
        workflow = await api.run("slow")
        await sim.wait_idle(timeout=5)
        assert 0.25 <= time.monotonic() - started < 2.0
        (_, t0), (_, t1), (_, t2) = sim.workflows[workflow["id"]].history
        assert t1 - t0 == pytest.approx(0.15, abs=0.1) and t2 - t1 == pytest.approx(0.15, abs=0.1)


async def test_status_reads_are_current() -> None:
    async with serve(time_scale=0.001) as (sim, api):
        workflow = await api.run("kyc-basic")  # 0.5 ms
        await asyncio.sleep(0.01)
        assert (await api.call("GET", f"/workflows/{workflow['id']}")).body["status"] == "COMPLETED"
        assert sim.workflow_status(workflow["id"]) == "COMPLETED"


# -- strictness -------------------------------------------------------------------------------
async def test_unknown_things_are_404() -> None:
    async with serve() as (_, api):
        case_id = await api.new_case()
        missing = str(uuid.uuid4())
        checks = [
            ("POST", "/workflows/run", {"caseId": missing, "workflowDefinitionId": "kyc-basic"}),
            ("POST", "/workflows/run", {"caseId": case_id, "workflowDefinitionId": "nope"}),
            (
                "POST",
                "/workflows/run",
                {"caseId": case_id, "workflowDefinitionId": "kyc-basic", "parametersId": missing},
            ),
            ("POST", "/parameters", {"workflowDefinitionId": "nope", "parameters": {}}),
            ("GET", f"/workflows/{missing}", None),
            ("GET", f"/workflows/{missing}/result", None),
            ("GET", "/no/such/route", None),
        ]
        for method, path, body in checks:
            reply = await api.call(method, path, body)
            assert reply.status == 404, (path, body)
            assert set(reply.body) == {"error", "message"}


@pytest.mark.parametrize(
    ("path", "raw", "error"),
    [
        ("/cases", b"{not json", "invalid_json"),
        ("/cases", b"[1, 2]", "invalid_json"),
        ("/cases", b"", "invalid_json"),
        ("/cases", b'{"nickname": "x"}', "unknown_field"),
        ("/cases", b'{"firstName": 5}', "invalid_field"),
        ("/parameters", b'{"parameters": {}}', "missing_field"),
        ("/parameters", b'{"workflowDefinitionId": "kyc-basic"}', "missing_field"),
        (
            "/parameters",
            b'{"workflowDefinitionId": "kyc-basic", "parameters": []}',
            "invalid_field",
        ),
        ("/workflows/run", b'{"workflowDefinitionId": "kyc-basic"}', "missing_field"),
        (
            "/workflows/run",
            b'{"caseId": "x", "workflowDefinitionId": "kyc-basic"}',
            "invalid_field",
        ),
    ],
)
async def test_bad_bodies_are_400(path: str, raw: bytes, error: str) -> None:
    async with serve() as (sim, api):
        reply = await api.call("POST", path, raw=raw)
        assert (reply.status, reply.body["error"]) == (400, error)
        assert not sim.workflows


async def test_parameters_of_another_definition_are_refused() -> None:
    async with serve() as (_, api):
        case_id = await api.new_case()
        body = {"workflowDefinitionId": "kyc-awaiting", "parameters": {}}
        params = await api.call("POST", "/parameters", body)
        run = {
            "caseId": case_id,
            "workflowDefinitionId": "kyc-basic",
            "parametersId": params.body["id"],
        }
        assert (await api.call("POST", "/workflows/run", run)).status == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_post_without_json_content_type_is_415(content_type: str) -> None:
    async with serve() as (_, api):
        reply = await api.call("POST", "/cases", raw=b"{}", headers={"Content-Type": content_type})
        assert reply.status == 415 and reply.body["error"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        ("application/json", 1),
        ("application/json;version=1", 1),
        ("application/json; version=2", 2),
        ("*/*", 1),
        ("text/html, application/json;version=2", 2),
        ("application/json;version=99", None),
        ("application/json;version=two", None),
        ("text/html", None),
    ],
)
async def test_accept_header_picks_the_api_version(accept: str, version: int | None) -> None:
    async with serve() as (sim, api):
        reply = await api.call("POST", "/cases", {}, headers={"Accept": accept})
        if version is None:
            assert reply.status == 406 and reply.body["error"] == "not_acceptable"
        else:
            assert reply.status == 201
        assert sim.requests[-1].api_version == version


def test_version_negotiation_is_pure() -> None:
    assert negotiate_version(None) == 1
    assert negotiate_version('application/json;version="2"') == 2
    with pytest.raises(Reject) as caught:
        negotiate_version("application/json;version=3")
    assert caught.value.status == 406


async def test_request_log_and_route_counts() -> None:
    async with serve() as (sim, api):
        workflow = await api.run("kyc-instant")
        await api.call(
            "GET", f"/workflows/{workflow['id']}", headers={"Accept": f"{JSON};version=2"}
        )
        await api.call("GET", f"/workflows/{workflow['id']}/result")
        await api.call("DELETE", "/cases")
        assert sim.calls_by_route == {
            "POST /auth/authorize": 1,
            "POST /cases": 1,
            "POST /workflows/run": 1,
            "GET /workflows/{id}": 1,
            "GET /workflows/{id}/result": 1,
            "DELETE <unmatched>": 1,
        }
        status_read = sim.requests[-3]
        assert status_read.path == f"/workflows/{workflow['id']}"
        assert (status_read.method, status_read.status, status_read.api_version) == ("GET", 200, 2)
        assert sim.requests[-1].status == 405
        assert len({record.request_id for record in sim.requests}) == len(sim.requests)


# -- the key endpoint and signatures ----------------------------------------------------------
async def test_key_endpoint_serves_pem_without_auth() -> None:
    async with serve() as (sim, api):
        api.token = ""
        async with api.http.get(f"/auth/webhooks/key/{sim.kid}?pem=true") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            assert "X-Request-Id" in response.headers
            assert await response.text() == sim.public_key_pem()
        assert (await api.call("GET", f"/auth/webhooks/key/{uuid.uuid4()}?pem=true")).status == 404
        assert (await api.call("GET", f"/auth/webhooks/key/{sim.kid}")).status == 400
        assert sim.requests[-1].api_version is None


@pytest.mark.parametrize("b64", [True, False])
def test_sign_webhook_verifies_with_cryptography(b64: bool) -> None:
    body = b'{"workflowId":"w-1",\r\n "status":"COMPLETED"}'
    signature = testing.sign_webhook(body, KEY, "kid-1", b64=b64)
    header = verify(testing.public_key_pem(KEY), signature, body)
    assert header["kid"] == "kid-1" and header["typ"] == "JWT"
    assert ("b64" in header) is not b64
    with pytest.raises(InvalidSignature):
        verify(testing.public_key_pem(KEY), signature, body + b" ")


# -- webhooks ---------------------------------------------------------------------------------
async def test_webhooks_announce_each_later_status_signed(receiver: Receiver) -> None:
    async with serve(webhook_urls=[receiver.url]) as (sim, api):
        workflow = await api.run("kyc-awaiting")
        await sim.wait_idle(timeout=5)
        events = receiver.events
        assert [e["status"] for e in events] == ["AWAITING", "COMPLETED"]  # not IN_PROGRESS
        assert [e["eventType"] for e in events] == ["WORKFLOW_AWAITING", "WORKFLOW_COMPLETED"]
        for event in events:
            assert event["workflowId"] == workflow["id"] and event["caseId"] == workflow["caseId"]
            assert uuid.UUID(event["eventId"]) and datetime.fromisoformat(event["timestamp"])
        async with api.http.get(f"/auth/webhooks/key/{sim.kid}", params={"pem": "true"}) as r:
            pem = await r.text()
        for hook in receiver.hooks:
            assert verify(pem, hook.signature, hook.body)["kid"] == sim.kid
        assert (sim.webhooks_sent, sim.webhooks_delivered) == (2, 2)


async def test_terminal_on_run_still_sends_its_final_webhook(receiver: Receiver) -> None:
    async with serve(webhook_urls=[receiver.url]) as (sim, api):
        workflow = await api.run("kyc-instant")
        assert workflow["status"] == "COMPLETED"
        hook = (await receiver.wait_for(1))[0]
        assert hook.event["eventType"] == "WORKFLOW_COMPLETED"
        assert hook.event["workflowId"] == workflow["id"]
        await sim.wait_idle(timeout=5)
        assert len(receiver.hooks) == 1


async def test_failing_receiver_gets_retries_that_are_counted(receiver: Receiver) -> None:
    receiver.script = [500, 500]
    async with serve(webhook_urls=[receiver.url]) as (sim, api):
        workflow = await api.run("kyc-instant")
        await sim.wait_idle(timeout=5)
        attempts = sim.webhook_attempts
        assert [(a.attempt, a.outcome) for a in attempts] == [(1, 500), (2, 500), (3, 200)]
        assert {a.workflow_id for a in attempts} == {workflow["id"]}
        assert len({a.event_id for a in attempts}) == 1
        assert (sim.webhooks_sent, sim.webhooks_delivered) == (3, 1)
        assert attempts[2].time - attempts[0].time >= 0.09  # two scaled 5 s intervals


async def test_retries_stop_after_webhook_retries(receiver: Receiver) -> None:
    receiver.script = [503] * 10
    async with serve(webhook_urls=[receiver.url], webhook_retries=2) as (sim, api):
        await api.run("kyc-instant")
        await sim.wait_idle(timeout=5)
        assert [a.outcome for a in sim.webhook_attempts] == [503, 503, 503]
        assert sim.webhooks_delivered == 0


async def test_timeouts_and_connection_errors_are_attempt_outcomes(receiver: Receiver) -> None:
    receiver.delay = 0.5
    with_dead_url = [receiver.url, "http://127.0.0.1:9/hook"]
    async with serve(webhook_urls=with_dead_url, webhook_timeout=10.0, webhook_retries=0) as (
        sim,
        api,
    ):
        await api.run("kyc-instant")
        await sim.wait_idle(timeout=5)
        outcomes = {a.url: a.outcome for a in sim.webhook_attempts}
        assert outcomes == {receiver.url: "timeout", with_dead_url[1]: "error"}


async def test_webhook_urls_can_change_while_running(receiver: Receiver) -> None:
    async with serve() as (sim, api):
        await api.run("kyc-instant")
        sim.add_webhook_url(receiver.url)
        sim.add_webhook_url(receiver.url)
        assert sim.webhook_urls == (receiver.url,)
        await api.run("kyc-instant")
        await sim.wait_idle(timeout=5)
        sim.remove_webhook_url(receiver.url)
        await api.run("kyc-instant")
        await sim.wait_idle(timeout=5)
        assert len(receiver.hooks) == 1


async def test_key_rotation_signs_with_the_new_kid_and_keeps_old_keys(receiver: Receiver) -> None:
    async with serve(webhook_urls=[receiver.url]) as (sim, api):
        old_kid, old_pem = sim.kid, sim.public_key_pem()
        new_kid = sim.rotate_key()
        assert sim.kid == new_kid != old_kid and sim.private_key is not KEY
        await api.run("kyc-instant")
        hook = (await receiver.wait_for(1))[0]
        new_pem = (await api.call("GET", f"/auth/webhooks/key/{new_kid}?pem=true")).body
        assert verify(new_pem, hook.signature, hook.body)["kid"] == new_kid
        with pytest.raises(InvalidSignature):
            verify(old_pem, hook.signature, hook.body)
        served_old = await api.call("GET", f"/auth/webhooks/key/{old_kid}?pem=true")
        assert served_old.body == old_pem == sim.public_key_pem(old_kid)


async def test_complete_forces_a_final_status_and_its_webhook(receiver: Receiver) -> None:
    long = WorkflowDefinition(duration=10_000.0)
    async with serve(webhook_urls=[receiver.url], definitions={"long": long}) as (sim, api):
        workflow = await api.run("long")
        await sim.complete(workflow["id"])
        assert [e["status"] for e in receiver.events] == ["COMPLETED"]
        assert sim.workflow_status(workflow["id"]) == "COMPLETED"
        await sim.complete(workflow["id"])  # same final status: nothing to announce
        await sim.complete(workflow["id"], status="FAILED")
        assert [e["status"] for e in receiver.events] == ["COMPLETED", "FAILED"]
        await sim.wait_idle(timeout=1)  # nothing left scheduled for it
        with pytest.raises(KeyError):
            await sim.complete(str(uuid.uuid4()))


def own_tasks() -> list[asyncio.Task[Any]]:
    """Running tasks but aiohttp's per-connection handlers."""
    return [t for t in asyncio.all_tasks() if "RequestHandler" not in repr(t.get_coro())]


async def test_one_timer_not_one_task_per_workflow() -> None:
    long = WorkflowDefinition(duration=10_000.0)
    async with serve(definitions={"long": long}) as (sim, api):
        case_id = await api.new_case()
        body = {"caseId": case_id, "workflowDefinitionId": "long"}
        tasks_before = len(own_tasks())
        replies = await asyncio.gather(
            *(api.call("POST", "/workflows/run", body) for _ in range(300))
        )
        assert {reply.status for reply in replies} == {201}
        assert len(sim.workflows) == 300
        assert len(own_tasks()) <= tasks_before


async def test_close_cancels_pending_work_cleanly(receiver: Receiver) -> None:
    receiver.delay = 1.0
    sim = Simulator(time_scale=0.01, webhook_urls=[receiver.url], signing_key=KEY)
    async with sim, aiohttp.ClientSession(sim.base_url) as http:
        api = await Api(http).login()
        await api.run("kyc-instant")  # its delivery hangs in the slow receiver
        await api.run("kyc-awaiting")  # its transitions are still scheduled
        await asyncio.sleep(0.05)
    await sim.close()  # idempotent
    assert own_tasks() == [asyncio.current_task()]
    with pytest.raises(RuntimeError):
        await sim.start()
    with pytest.raises(RuntimeError):
        _ = sim.base_url


# -- faults -----------------------------------------------------------------------------------
async def run_many(api: Api, count: int, definition: str = "kyc-instant") -> list[str]:
    case_id = await api.new_case()
    body = {"caseId": case_id, "workflowDefinitionId": definition}
    ids = []
    for _ in range(count):
        ids.append((await api.call("POST", "/workflows/run", body)).body["id"])
    return ids


@pytest.mark.parametrize(("share", "low", "high"), [(0.0, 40, 40), (1.0, 0, 0), (0.5, 10, 30)])
async def test_drop_webhooks(receiver: Receiver, share: float, low: int, high: int) -> None:
    faults = Faults(drop_webhooks=share)
    async with serve(webhook_urls=[receiver.url], faults=faults) as (sim, api):
        await run_many(api, 40)
        await sim.wait_idle(timeout=5)
        assert low <= len(receiver.hooks) <= high
        dropped = [a for a in sim.webhook_attempts if a.outcome == "dropped"]
        assert len(dropped) == 40 - len(receiver.hooks)
        assert all(a.attempt == 0 for a in dropped)


@pytest.mark.parametrize(("share", "low", "high"), [(0.0, 30, 30), (1.0, 60, 60), (0.5, 38, 52)])
async def test_duplicate_webhooks(receiver: Receiver, share: float, low: int, high: int) -> None:
    faults = Faults(duplicate_webhooks=share)
    async with serve(webhook_urls=[receiver.url], faults=faults) as (sim, api):
        await run_many(api, 30)
        await sim.wait_idle(timeout=5)
        assert low <= len(receiver.hooks) <= high
        event_ids = [e["eventId"] for e in receiver.events]
        assert len(set(event_ids)) == 30
        copies = [a for a in sim.webhook_attempts if a.duplicate]
        assert len(copies) == len(receiver.hooks) - 30 == sim.webhooks_delivered - 30


async def test_out_of_order_delivers_newest_first_once_final(receiver: Receiver) -> None:
    steps = WorkflowDefinition(("IN_PROGRESS", "AWAITING", "COMPLETED"), duration=40.0)
    options = {"webhook_urls": [receiver.url], "definitions": {"steps": steps}}
    async with serve(faults=Faults(out_of_order=True), **options) as (sim, api):
        workflow = await api.run("steps")  # AWAITING after 0.2 s, COMPLETED after 0.4 s
        await eventually(
            lambda: sim.workflow_status(workflow["id"]) != "IN_PROGRESS",
            "the workflow past IN_PROGRESS",
        )
        assert not receiver.hooks  # AWAITING is held back
        await sim.wait_idle(timeout=5)
        assert [e["status"] for e in receiver.events] == ["COMPLETED", "AWAITING"]


@pytest.mark.parametrize(
    ("definition", "status"), [("kyc-slow", "IN_PROGRESS"), ("kyc-instant", "COMPLETED")]
)
async def test_webhook_before_response(receiver: Receiver, definition: str, status: str) -> None:
    faults = Faults(webhook_before_response=True)
    async with serve(webhook_urls=[receiver.url], faults=faults) as (sim, api):
        # kyc-slow: 0.3 s at this time scale, so only the run's own webhook can be there yet,
        # even on a loaded machine.
        sim.define("kyc-slow", WorkflowDefinition(("IN_PROGRESS", "COMPLETED"), duration=30))
        workflow = await api.run(definition)
        assert [e["status"] for e in receiver.events] == [status]  # already there, no waiting
        assert receiver.events[0]["workflowId"] == workflow["id"]
        await sim.wait_idle(timeout=5)
        assert [e["status"] for e in receiver.events][-1] == "COMPLETED"


async def test_webhook_delay_is_plain_seconds(receiver: Receiver) -> None:
    faults = Faults(webhook_delay=0.3)
    async with serve(webhook_urls=[receiver.url], faults=faults) as (_, api):
        started = time.monotonic()
        await api.run("kyc-instant")
        await receiver.wait_for(1)
        assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_injected_errors_happen_before_the_effect(status: int) -> None:
    async with serve() as (sim, api):
        case_id = await api.new_case()
        sim.faults = Faults(error_rate=1.0, error_statuses=(status,), retry_after=2.5)
        body = {"caseId": case_id, "workflowDefinitionId": "kyc-basic"}
        reply = await api.call("POST", "/workflows/run", body)
        assert reply.status == status and set(reply.body) == {"error", "message"}
        assert reply.headers.get("Retry-After") == ("2.5" if status in (429, 503) else None)
        assert not sim.workflows
        assert sim.requests[-1].fault == "error"
        key = await api.call("GET", f"/auth/webhooks/key/{sim.kid}?pem=true")
        assert key.status == 200  # the key endpoint is not an API call


async def test_error_rate_share_and_retry_after_format() -> None:
    async with serve() as (sim, api):
        sim.faults.error_rate = 0.0
        assert {(await api.call("GET", "/workflows/x")).status for _ in range(10)} == {404}
        sim.faults.error_rate, sim.faults.error_statuses = 0.5, (429,)
        statuses = [(await api.call("GET", "/workflows/x")).status for _ in range(40)]
        assert 10 <= statuses.count(429) <= 30 and statuses.count(404) == 40 - statuses.count(429)
        assert sim.requests[-1].status in (404, 429)
        sim.faults.retry_after = 3.0
        sim.faults.error_rate = 1.0
        assert (await api.call("GET", "/workflows/x")).headers["Retry-After"] == "3"


async def test_error_after_effect_loses_the_answer_not_the_workflow() -> None:
    async with serve() as (sim, api):
        case_id = await api.new_case()
        sim.faults.error_rate, sim.faults.error_after_effect = 1.0, True
        body = {"caseId": case_id, "workflowDefinitionId": "kyc-basic"}
        reply = await api.call("POST", "/workflows/run", body)
        assert reply.status == 500
        assert len(sim.workflows) == 1 and sim.requests[-1].fault == "error_after_effect"


async def test_latency_delays_every_answer() -> None:
    async with serve(faults=Faults(latency=0.2)) as (sim, api):
        started = time.monotonic()
        await api.call("GET", f"/auth/webhooks/key/{sim.kid}?pem=true")
        assert time.monotonic() - started >= 0.2 and sim.requests[-1].duration >= 0.2


async def test_disconnects_cut_the_answer_after_the_effect() -> None:
    async with serve() as (sim, api):
        case_id = await api.new_case()
        sim.faults.disconnect_rate = 1.0
        body = {"caseId": case_id, "workflowDefinitionId": "kyc-basic"}
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            await api.call("POST", "/workflows/run", body)
        assert len(sim.workflows) == 1
        assert (sim.requests[-1].fault, sim.requests[-1].status) == ("disconnect", 201)
        sim.faults.disconnect_rate = 0.0
        assert {(await api.call("GET", "/workflows/x")).status for _ in range(10)} == {404}
        sim.faults.disconnect_rate = 0.5
        cut = 0
        for _ in range(30):
            try:
                await api.call("GET", "/workflows/x")
            except aiohttp.ClientError:
                cut += 1
        assert 6 <= cut <= 24
        assert cut == sum(r.fault == "disconnect" for r in sim.requests) - 1


@pytest.mark.parametrize("knob", ["bad_signature_rate", "unknown_kid_rate"])
async def test_signature_faults(receiver: Receiver, knob: str) -> None:
    async with serve(webhook_urls=[receiver.url]) as (sim, api):
        setattr(sim.faults, knob, 1.0)
        await api.run("kyc-instant")
        hook = (await receiver.wait_for(1))[0]
        kid = json.loads(b64url_decode(hook.signature.split(".")[0]))["kid"]
        key = await api.call("GET", f"/auth/webhooks/key/{kid}?pem=true")
        if knob == "bad_signature_rate":
            assert kid == sim.kid and key.status == 200
            with pytest.raises(InvalidSignature):
                verify(key.body, hook.signature, hook.body)
        else:
            assert kid != sim.kid and key.status == 404
        setattr(sim.faults, knob, 0.0)
        await api.run("kyc-instant")
        good = (await receiver.wait_for(2))[1]
        verify(sim.public_key_pem(), good.signature, good.body)


async def test_signature_fault_shares_in_between(receiver: Receiver) -> None:
    faults = Faults(bad_signature_rate=0.3, unknown_kid_rate=0.3)
    async with serve(webhook_urls=[receiver.url], faults=faults) as (sim, api):
        await run_many(api, 40)
        await sim.wait_idle(timeout=5)
        pem = sim.public_key_pem()
        verdicts = []
        for hook in receiver.hooks:
            try:
                verify(pem, hook.signature, hook.body)
                verdicts.append("valid")
            except InvalidSignature:
                kid = json.loads(b64url_decode(hook.signature.split(".")[0]))["kid"]
                verdicts.append("bad_signature" if kid == sim.kid else "unknown_kid")
        recorded = {a.event_id: a.signature for a in sim.webhook_attempts}
        assert verdicts == [recorded[event["eventId"]] for event in receiver.events]
        assert 4 <= verdicts.count("bad_signature") <= 20
        assert 2 <= verdicts.count("unknown_kid") <= 16
        assert 10 <= verdicts.count("valid") <= 30


@pytest.mark.parametrize(("share", "low", "high"), [(0.0, 0, 0), (0.5, 5, 15), (1.0, 20, 20)])
async def test_key_error_rate(share: float, low: int, high: int) -> None:
    async with serve(faults=Faults(key_error_rate=share)) as (sim, api):
        statuses = [
            (await api.call("GET", f"/auth/webhooks/key/{sim.kid}?pem=true")).status
            for _ in range(20)
        ]
        assert low <= statuses.count(503) <= high and statuses.count(200) == 20 - statuses.count(
            503
        )


async def test_key_error_rate_fails_key_fetches() -> None:
    async with serve(faults=Faults(key_error_rate=1.0)) as (sim, api):
        reply = await api.call("GET", f"/auth/webhooks/key/{sim.kid}?pem=true")
        assert reply.status == 503 and reply.headers["Retry-After"] == "1"
        assert sim.requests[-1].fault == "key_error"


def test_faults_are_checked_when_set() -> None:
    faults = Faults(error_rate=0.3, latency=1.0)
    with pytest.raises(ValueError, match="error_rate"):
        faults.error_rate = 1.5
    with pytest.raises(ValueError, match="latency"):
        Faults(latency=-1)
    with pytest.raises(ValueError, match="error_statuses"):
        Faults(error_statuses=(200,))
    faults.reset()
    assert faults == Faults()


def test_state_is_pure_and_driven_by_an_injected_clock() -> None:
    now = [100.0]
    state = SimState(definitions=BUILTIN_DEFINITIONS, time_scale=1.0, clock=lambda: now[0])
    case = state.create_case({"lastName": "Lovelace"})
    workflow, first, due = state.run({"caseId": case["id"], "workflowDefinitionId": "kyc-awaiting"})
    assert (first.status, first.final, due) == ("IN_PROGRESS", False, 100.5)
    assert state.advance() == []
    now[0] = 101.0
    assert [(t.status, t.final) for t in state.advance()] == [
        ("AWAITING", False),
        ("COMPLETED", True),
    ]
    assert state.next_due() is None and state.active == 0
    assert state.get(workflow["id"])["status"] == "COMPLETED"


# -- the pytest plugin ------------------------------------------------------------------------
async def test_the_pytest_fixture_serves_a_fast_simulator(workflows_simulator: Simulator) -> None:
    assert workflows_simulator.time_scale == 0.01
    async with aiohttp.ClientSession(workflows_simulator.base_url) as http:
        api = await Api(http).login()
        workflow = await api.run("kyc-basic")
        await workflows_simulator.wait_idle(timeout=5)
        assert workflows_simulator.workflow_status(workflow["id"]) == "COMPLETED"


@pytest.mark.workflows_simulator(time_scale=0.5, key="k2")
async def test_the_fixture_takes_arguments_from_its_marker(workflows_simulator: Simulator) -> None:
    assert (workflows_simulator.time_scale, workflows_simulator.key) == (0.5, "k2")


USER_TEST = """
import aiohttp
import pytest

from workflows_async.testing import Faults, Simulator


@pytest.mark.asyncio
@pytest.mark.workflows_simulator(faults=Faults(error_rate=1.0, error_statuses=(502,)))
async def test_flaky_gateway(workflows_simulator: Simulator) -> None:
    sim = workflows_simulator
    async with aiohttp.ClientSession(sim.base_url) as http:
        credentials = {"key": sim.key, "secret": sim.secret}
        async with http.post("/auth/authorize", json=credentials) as response:
            assert response.status == 502


@pytest.mark.asyncio
async def test_two_simulators(workflows_simulator_factory) -> None:
    first = await workflows_simulator_factory()
    second = await workflows_simulator_factory(key="other")
    assert first.base_url != second.base_url and second.key == "other"
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
async def test_the_plugin_in_a_user_project(tmp_path: Path, mode: str) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    ini = f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(ini)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", "-W", "error"]
    installed = importlib.metadata.entry_points(group="pytest11", name="workflows_async")
    if not installed:  # a checkout that is not pip-installed: load the plugin by hand
        args += ["-p", "workflows_async.testing.plugin"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert "2 passed" in output.decode()


async def test_the_app_can_be_served_by_anyone(receiver: Receiver) -> None:
    sim = Simulator(time_scale=0.01, webhook_urls=[receiver.url], signing_key=KEY)
    async with TestServer(sim.app, host="127.0.0.1") as server:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            api = await Api(http).login()
            await api.run("kyc-awaiting")
            await sim.wait_idle(timeout=5)
        assert [e["status"] for e in receiver.events] == ["AWAITING", "COMPLETED"]


def test_public_names() -> None:
    assert testing.__all__ == sorted(testing.__all__)
    for name in testing.__all__:
        assert getattr(testing, name) is not None


def test_record_log_keeps_the_newest() -> None:
    from workflows_async.testing._records import RecordLog

    log: RecordLog[int] = RecordLog(100)
    for i in range(1000):
        log.append(i)
    assert len(log) <= 125 and log[-1] == 999 and log[0] >= 875
    unbounded: RecordLog[int] = RecordLog()
    for i in range(1000):
        unbounded.append(i)
    assert len(unbounded) == 1000


async def test_log_limit_bounds_the_request_log() -> None:
    async with Simulator(log_limit=10) as sim, aiohttp.ClientSession() as http:
        for _ in range(40):
            async with http.get(f"{sim.base_url}/workflows/x") as response:
                assert response.status == 401
        assert 10 <= len(sim.requests) <= 12
        assert sum(sim.calls_by_route.values()) == 40  # counters still count everything
