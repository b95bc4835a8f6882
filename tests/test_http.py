"""The request path under production faults (issue 10): the 401 flow against revoked tokens,
POSTs whose outcome is unknown, run answers that do not decode strictly, response size caps and
the signing-key pool. Flows run against small real localhost aiohttp servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fake_api import Call, FakeAPI, FirstConnectRefused, first_connect_refused_session
from fake_time import FakeTime

import workflows_async as wa
from workflows_async import errors

BASE = "https://api.example.test"
FAST = wa.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002, max_time=5)
CASE_ID = "6f1c9a52-0b7e-4c8e-9a51-3f2d6f0e8a11"
WF_ID = "9b2f7d4e-1c3a-4b5d-8e6f-7a8b9c0d1e2f"
KID = "0f0e0d0c-0b0a-4908-8706-050403020100"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def mocked() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as api:
        yield api


def local(
    api: FakeAPI, auth: wa.Auth | None, *, time: FakeTime | None = None, **kwargs: Any
) -> wa.Session:
    """A Session on the scripted localhost API (tests/fake_api.py); its retries wait on
    ``time`` (a new FakeTime by default), never for real."""
    session = wa.Session(api.base_url, auth, allow_insecure_http=True, **kwargs)
    return (time or FakeTime()).install(session)


def calls(mocked: FakeAPI, method: str, path: str) -> list[Call]:
    return mocked.calls(method, path)


def token_body(access: str) -> dict[str, Any]:
    return {"accessToken": access, "refreshToken": "r-" + access, "expiryDuration": 300}


@asynccontextmanager
async def serve(routes: list[web.RouteDef]) -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(routes)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")


class TokenAPI:
    """Issues t1, t2, ... and accepts only the tokens in ``valid`` (revoke = remove them).
    ``GET /workflows/held`` waits for ``gate`` before it looks at its token."""

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.issued = 0
        self.held = asyncio.Event()
        self.gate = asyncio.Event()
        self.seen: list[tuple[str, str]] = []
        """(workflow id, token) of every workflow request, as it arrived."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/auth/authorize", self.issue),
            web.post("/auth/refresh", self.issue),
            web.get("/workflows/{id}", self.workflow),
        ]

    async def issue(self, request: web.Request) -> web.Response:
        self.issued += 1
        token = f"t{self.issued}"
        self.valid.add(token)
        return web.json_response(token_body(token))

    async def workflow(self, request: web.Request) -> web.Response:
        wid = request.match_info["id"]
        if wid == "held":
            self.held.set()
            await self.gate.wait()
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append((wid, token))
        if token not in self.valid:
            return web.json_response({"message": "token revoked"}, status=401)
        return web.json_response({"id": wid, "status": "IN_PROGRESS"})


# -- item 1: a 401 for an older token ---------------------------------------------------------


async def test_a_401_for_an_older_token_resends_then_renews_when_the_newer_is_revoked_too() -> None:
    api = TokenAPI()
    async with serve(api.routes()) as url:
        auth = wa.KeySecretAuth("k", "s")
        async with wa.Session(url, auth, allow_insecure_http=True, retry=FAST) as session:
            await session.get_workflow("a")  # t1
            held = asyncio.create_task(session.get_workflow("held"))  # sent with t1
            async with asyncio.timeout(10):
                await api.held.wait()
            api.valid.clear()  # t1 revoked
            await session.get_workflow("b")  # 401 -> renewal -> t2
            api.valid.clear()  # t2 revoked too
            api.gate.set()
            async with asyncio.timeout(10):
                workflow = await held  # 401 (t1) -> t2: 401 -> renewal -> t3
    assert workflow.id == "held"
    assert api.issued == 3 and session.stats().token_requests == 3


async def test_a_request_queued_for_a_connection_takes_its_token_when_it_goes_out() -> None:
    """With every connection busy, a call waits for one before it takes its Authorization value:
    a value taken at call time could expire while it queues (2,000 concurrent calls on 100
    connections and 3 s tokens made most of them fail with 401 in the chaos soak)."""
    api = TokenAPI()
    now = [0.0]
    async with serve(api.routes()) as url:
        auth = wa.KeySecretAuth("k", "s", clock=lambda: now[0])
        connector = aiohttp.TCPConnector(limit=1)
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            wa.Session(url, auth, allow_insecure_http=True, retry=FAST, http_session=http) as s,
        ):
            await s.get_workflow("a")  # t1, valid 300 s on the fake clock
            held = asyncio.create_task(s.get_workflow("held"))  # holds the only connection
            async with asyncio.timeout(10):
                await api.held.wait()
            queued = asyncio.create_task(s.get_workflow("queued"))
            await asyncio.sleep(0.05)  # queued: waiting for the connection
            now[0] += 1000.0  # t1 expires (by the clock) while the call queues
            api.gate.set()
            async with asyncio.timeout(10):
                await held
                await queued
    assert ("queued", "t2") in api.seen and ("queued", "t1") not in api.seen
    assert api.issued == 2


async def test_many_calls_refused_at_once_share_one_renewal() -> None:
    api = TokenAPI()
    async with serve(api.routes()) as url:
        auth = wa.KeySecretAuth("k", "s")
        async with wa.Session(url, auth, allow_insecure_http=True, retry=FAST) as session:
            await session.get_workflow("a")
            api.valid.clear()
            results = await asyncio.gather(*(session.get_workflow(f"w{i}") for i in range(60)))
    assert {w.status for w in results} == {"IN_PROGRESS"}
    assert api.issued == 2


async def test_a_401_after_a_successful_renewal_is_a_plain_authentication_error(
    mocked: FakeAPI,
) -> None:
    mocked.post("/auth/authorize", payload=token_body("a1"), repeat=True)
    mocked.post("/auth/refresh", payload=token_body("a2"), repeat=True)
    mocked.get(f"/workflows/{WF_ID}", status=401, repeat=True)
    auth = wa.KeySecretAuth("k", "s")
    async with local(mocked, auth, retry=FAST) as session:
        with pytest.raises(errors.AuthenticationError) as info:
            await session.get_workflow(WF_ID)
    assert type(info.value) is errors.AuthenticationError  # the wait keeps polling on it
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}")) == 2
    assert session.stats().token_requests == 2


async def test_a_fixed_token_refused_is_a_credentials_error(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", status=401, repeat=True)
    async with local(mocked, wa.TokenAuth("fixed-tok"), retry=FAST) as session:
        with pytest.raises(errors.CredentialsError) as info:
            await session.get_workflow(WF_ID)
    assert "cannot be renewed" in str(info.value) and "fixed-tok" not in str(info.value)
    assert info.value.status == 401
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}")) == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_key_and_secret_are_a_credentials_error(mocked: FakeAPI, status: int) -> None:
    mocked.post("/auth/authorize", status=status, repeat=True)
    async with local(mocked, wa.KeySecretAuth("the-key", "the-secret"), retry=FAST) as s:
        with pytest.raises(errors.CredentialsError) as info:
            await s.get_workflow(WF_ID)
    assert info.value.status == status and info.value.path == "/auth/authorize"
    assert "the-key" not in str(info.value) and "the-secret" not in str(info.value)
    assert len(calls(mocked, "POST", "/auth/authorize")) == 1


async def test_token_auth_sends_the_bearer_value(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", payload={"id": WF_ID, "status": "X"})
    async with local(mocked, wa.TokenAuth("tok-9"), retry=FAST) as session:
        await session.get_workflow(WF_ID)
    (call,) = calls(mocked, "GET", f"/workflows/{WF_ID}")
    assert call.headers["Authorization"] == "Bearer tok-9"


async def test_an_attempt_logged_at_debug_names_the_request_id_of_its_answer(
    mocked: FakeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    answer = {"id": WF_ID, "status": "X"}
    mocked.get(f"/workflows/{WF_ID}", payload=answer, headers={"X-Request-Id": "req-5"})
    mocked.get(f"/workflows/{WF_ID}", payload=answer, headers={"X-Request-Id": "req-6"})
    async with local(mocked, wa.TokenAuth("tok-9"), retry=FAST) as session:
        with caplog.at_level(logging.DEBUG, logger="workflows_async.http"):
            await session.get_workflow(WF_ID)
        await session.get_workflow(WF_ID)  # not logged
    (record,) = [r for r in caplog.records if r.name == "workflows_async.http"]
    assert record.request_id == "req-5"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500},
        {"status": 502},
        {"status": 503},
        {"status": 429, "headers": {"Retry-After": "0"}},
        {"action": "disconnect"},
        {"action": "hang"},  # a read timeout
    ],
)
async def test_token_requests_are_retried_like_gets(mocked: FakeAPI, fault: dict[str, Any]) -> None:
    mocked.post("/auth/authorize", **fault)
    mocked.post("/auth/authorize", payload=token_body("a1"))
    mocked.get(f"/workflows/{WF_ID}", payload={"id": WF_ID, "status": "X"})
    time = FakeTime()
    auth = wa.KeySecretAuth("k", "s")
    async with local(mocked, auth, time=time, retry=FAST, timeout=0.5) as session:
        assert (await session.get_workflow(WF_ID)).id == WF_ID
    assert len(calls(mocked, "POST", "/auth/authorize")) == 2
    (wait,) = time.sleeps  # one retry, after its wait
    assert wait == 0.0 if "headers" in fault else 0 <= wait <= FAST.base_delay


# -- item 4: a POST is resent only when it surely did not reach the server --------------------


@pytest.fixture
def fake_time() -> FakeTime:
    """The retry waits of the ``session`` fixture, recorded instead of slept."""
    return FakeTime()


@pytest.fixture
async def session(mocked: FakeAPI, fake_time: FakeTime) -> AsyncIterator[wa.Session]:
    async with local(mocked, wa.TokenAuth("tok"), time=fake_time, retry=FAST, timeout=0.5) as s:
        yield s


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_a_run_answered_5xx_or_408_is_not_resent_and_its_outcome_is_unknown(
    session: wa.Session, mocked: FakeAPI, fake_time: FakeTime, status: int
) -> None:
    mocked.post("/workflows/run", status=status, headers={"Retry-After": "0"})
    mocked.post("/workflows/run", payload={"id": WF_ID, "status": "IN_PROGRESS"})
    with pytest.raises(errors.OutcomeUnknownError) as info:
        await session.run_workflow(CASE_ID, "kyc", parameters_id="p1")
    error = info.value
    assert (error.status, error.method, error.path) == (status, "POST", "/workflows/run")
    assert error.case_id == CASE_ID and error.workflow_definition_id == "kyc"
    assert error.workflow_id is None
    assert isinstance(error, errors.WorkflowsError)
    assert len(calls(mocked, "POST", "/workflows/run")) == 1
    assert fake_time.sleeps == []  # not even a wait before giving up


@pytest.mark.parametrize(
    "action",
    [
        "disconnect",  # e.g. a pooled keep-alive connection the server closed
        "reset",  # Connection reset by peer
        "truncate",  # the answer cut short
        "hang",  # a read timeout
    ],
)
async def test_a_post_that_lost_its_connection_after_sending_is_not_resent(
    session: wa.Session, mocked: FakeAPI, fake_time: FakeTime, action: Any
) -> None:
    mocked.post("/parameters", payload={"id": "p0"}, action=action)
    mocked.post("/parameters", payload={"id": "p1"})
    with pytest.raises(errors.OutcomeUnknownError) as info:
        await session.create_parameters("kyc", {"a": 1})
    assert info.value.status is None and info.value.workflow_definition_id == "kyc"
    assert len(calls(mocked, "POST", "/parameters")) == 1
    assert fake_time.sleeps == []


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (415, errors.UnsupportedMediaTypeError),
        (422, errors.APIError),
    ],
)
async def test_a_post_refused_with_a_4xx_keeps_its_normal_error(
    session: wa.Session, mocked: FakeAPI, status: int, cls: type[errors.APIError]
) -> None:
    mocked.post("/workflows/run", status=status, repeat=True)
    with pytest.raises(cls) as info:
        await session.run_workflow(CASE_ID, "kyc")
    assert type(info.value) is cls and info.value.status == status
    assert len(calls(mocked, "POST", "/workflows/run")) == 1


async def test_a_post_answered_401_is_resent_after_a_renewal(mocked: FakeAPI) -> None:
    mocked.post("/auth/authorize", payload=token_body("a1"))
    mocked.post("/auth/refresh", payload=token_body("a2"))
    mocked.post("/workflows/run", status=401)
    mocked.post("/workflows/run", payload={"id": WF_ID, "status": "IN_PROGRESS"})
    async with local(mocked, wa.KeySecretAuth("k", "s"), retry=FAST) as session:
        assert (await session.run_workflow(CASE_ID, "kyc")).id == WF_ID
    sent = calls(mocked, "POST", "/workflows/run")
    assert [c.headers["Authorization"] for c in sent] == ["Bearer a1", "Bearer a2"]


async def test_a_post_that_never_connected_is_resent_then_fails_plainly(mocked: FakeAPI) -> None:
    mocked.post("/cases", payload={"id": CASE_ID}, repeat=True)
    refusing = FirstConnectRefused(mocked.port, refusals=100)  # every connection is refused
    time = FakeTime()
    async with (
        first_connect_refused_session(mocked.port, refusing) as http,
        time.install(wa.Session(
            "http://api.test", wa.TokenAuth("t"), retry=FAST, http_session=http,
            allow_insecure_http=True,
        )) as session,
    ):  # fmt: skip
        with pytest.raises(errors.TransportError) as info:
            await session.create_case()
    assert not isinstance(info.value, errors.OutcomeUnknownError)
    assert refusing.lookups == FAST.max_attempts  # one connection attempt each
    assert len(time.sleeps) == FAST.max_attempts - 1
    assert not calls(mocked, "POST", "/cases")


# -- item 5: a 2xx run answer that does not decode strictly -------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"id": WF_ID, "caseId": CASE_ID, "status": None},
        {"id": WF_ID, "caseId": CASE_ID},
        {"id": WF_ID, "caseId": 7, "status": {"odd": True}},
    ],
)
async def test_a_run_answer_with_an_id_is_kept_even_when_the_rest_is_odd(
    session: wa.Session, mocked: FakeAPI, body: dict[str, Any]
) -> None:
    mocked.post("/workflows/run", payload=body)
    workflow = await session.run_workflow(CASE_ID, "kyc")
    assert workflow.id == WF_ID and workflow.status == ""
    assert not session.statuses.is_terminal(workflow.status)


@pytest.mark.parametrize(
    "body", [b"", b"<html>ok</html>", b'{"status": "IN_PROGRESS"}', b"[1]", b'{"id": "../x"}']
)
async def test_a_run_answer_without_a_usable_id_is_an_unknown_outcome(
    session: wa.Session, mocked: FakeAPI, body: bytes
) -> None:
    mocked.post("/workflows/run", body=body, headers={"Content-Type": "application/json"})
    with pytest.raises(errors.OutcomeUnknownError) as info:
        await session.run_workflow(CASE_ID, "kyc")
    assert info.value.case_id == CASE_ID and info.value.status is None
    assert len(calls(mocked, "POST", "/workflows/run")) == 1


async def test_an_unreadable_case_answer_is_an_unknown_outcome(
    session: wa.Session, mocked: FakeAPI
) -> None:
    mocked.post("/cases", body=b"{not json")
    with pytest.raises(errors.OutcomeUnknownError):
        await session.create_case(first_name="Ann")


async def test_run_and_wait_polls_a_run_whose_status_was_unreadable(mocked: FakeAPI) -> None:
    mocked.post("/workflows/run", payload={"id": WF_ID, "status": None})
    mocked.get(f"/workflows/{WF_ID}", payload={"id": WF_ID, "status": "COMPLETED"})
    mocked.get(f"/workflows/{WF_ID}/result", payload={"caseId": CASE_ID})
    poll = wa.PollPolicy(initial_delay=0.01, max_interval=0.05, rate=200)
    async with local(mocked, wa.TokenAuth("t"), retry=FAST, poll=poll) as session:
        outcome = await session.run_and_wait(CASE_ID, "kyc", timeout=10)
    assert outcome.workflow.status == "COMPLETED" and outcome.channel == wa.Channel.POLL
    assert len(calls(mocked, "POST", "/workflows/run")) == 1


# -- item 7: response size cap ------------------------------------------------------------------


async def test_a_body_above_the_cap_by_content_length_is_refused_unread(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}/result", body=b"x" * 2048, repeat=True)
    async with local(mocked, wa.TokenAuth("t"), retry=FAST, max_response_body=1024) as s:
        with pytest.raises(errors.ResponseTooLargeError) as info:
            await s.get_result(WF_ID)
    assert isinstance(info.value, errors.DecodeError)
    assert info.value.limit == 1024 and info.value.status == 200
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}/result")) == 1  # not retried


async def test_a_streamed_body_above_the_cap_is_refused_while_reading() -> None:
    async def result(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()  # no Content-Length to check first
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"x" * 1024)
        await response.write_eof()
        return response

    async with serve([web.get("/workflows/{id}/result", result)]) as url:
        session = wa.Session(
            url, wa.TokenAuth("t"), allow_insecure_http=True, retry=FAST, max_response_body=10_000
        )
        async with session:
            with pytest.raises(errors.ResponseTooLargeError):
                await session.get_result(WF_ID)


async def test_a_run_answer_above_the_cap_is_an_unknown_outcome(mocked: FakeAPI) -> None:
    mocked.post("/workflows/run", body=b'{"id": "' + b"x" * 2048 + b'"}')
    async with local(mocked, wa.TokenAuth("t"), retry=FAST, max_response_body=1024) as s:
        with pytest.raises(errors.OutcomeUnknownError) as info:
            await s.run_workflow(CASE_ID, "kyc")
    assert isinstance(info.value.__cause__, errors.ResponseTooLargeError)


async def test_a_large_error_body_still_gives_the_status_error(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", status=404, body=b"y" * 4096)
    async with local(mocked, wa.TokenAuth("t"), retry=FAST, max_response_body=1024) as s:
        with pytest.raises(errors.NotFoundError) as info:
            await s.get_workflow(WF_ID)
    assert info.value.body_excerpt.startswith("yyy")


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_max_response_body_is_checked(bad: Any) -> None:
    with pytest.raises(errors.ConfigurationError):
        wa.Session(BASE, max_response_body=bad)


# -- item 8: signing-key fetches have their own pool --------------------------------------------


async def test_a_key_fetch_does_not_queue_behind_slow_api_calls() -> None:
    gate, arrived = asyncio.Event(), asyncio.Event()
    seen: list[str] = []
    in_flight = 100  # aiohttp's default connection limit

    async def slow(request: web.Request) -> web.Response:
        seen.append(request.match_info["id"])
        if len(seen) >= in_flight:
            arrived.set()
        await gate.wait()
        return web.json_response({"id": request.match_info["id"], "status": "IN_PROGRESS"})

    async def key(request: web.Request) -> web.Response:
        assert "Authorization" not in request.headers
        return web.Response(text="-----BEGIN PUBLIC KEY-----\n...\n")

    routes = [web.get("/workflows/{id}", slow), web.get("/auth/webhooks/key/{kid}", key)]
    async with serve(routes) as url:
        session = wa.Session(
            url, wa.TokenAuth("t"), allow_insecure_http=True, retry=wa.RetryPolicy.none()
        )
        async with session:
            calls_ = [asyncio.create_task(session.get_workflow(f"w{i}")) for i in range(150)]
            try:
                async with asyncio.timeout(30):
                    await arrived.wait()
                fetch = asyncio.create_task(session.get_webhook_key(KID))
                done, _ = await asyncio.wait({fetch}, timeout=15)  # a hang guard, not a timing
                assert fetch in done, "the key fetch queued behind the slow API calls"
                assert fetch.result().startswith("-----BEGIN PUBLIC KEY-----")
                assert not any(c.done() for c in calls_)  # they were all still pending
            finally:
                gate.set()
                await asyncio.gather(*calls_, return_exceptions=True)
        assert session._keys_http.closed
