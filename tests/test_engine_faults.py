"""Waits that survive transient poll errors: 401 (renewed, polled on), 404 (a grace period),
a poll answer that makes no sense, a scheduler that hits a bug; and the errors that do end a
wait (CredentialsError, 403, 400, a 404 past the grace) carry the workflow id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from eventually import eventually
from test_registry import event

import workflows_async as wa
from workflows_async.bus import InMemoryBus
from workflows_async.engine import WaitEngine
from workflows_async.polling import PollScheduler, PollVerdict, poll_error_verdict
from workflows_async.statuses import StatusSet
from workflows_async.testing import serve

QUICK = wa.PollPolicy(initial_delay=0, max_interval=0.02, jitter=0, rate=1000)
WF = "9b2f7d4e-1c3a-4b5d-8e6f-7a8b9c0d1e2f"


def api_error(cls: type[wa.APIError], status: int, wid: str = WF) -> wa.APIError:
    return cls(status, method="GET", path=f"/workflows/{wid}")


class SkewClock:
    """Real time plus a skew the test can jump forward (polls still run at real pace)."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew


class Script:
    """A fake poll function: answers (or raises) from a list, then repeats the last item."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, wid: str) -> wa.Workflow:
        self.calls += 1
        item = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, str):
            return wa.Workflow(id=wid, status=item)
        return item  # type: ignore[no-any-return]


class Recorder:
    def __init__(self) -> None:
        self.done: list[tuple[str, wa.Workflow]] = []
        self.errors: list[tuple[str, BaseException]] = []
        self.changed = asyncio.Event()

    def on_terminal(self, wid: str, workflow: wa.Workflow) -> None:
        self.done.append((wid, workflow))
        self.changed.set()

    def on_error(self, wid: str, exc: BaseException) -> None:
        self.errors.append((wid, exc))
        self.changed.set()

    async def settled(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self.changed.wait()


@asynccontextmanager
async def scheduler(
    poll: Callable[[str], Any],
    policy: wa.PollPolicy = QUICK,
    *,
    clock: Callable[[], float] = time.monotonic,
    **options: Any,
) -> AsyncIterator[tuple[PollScheduler, Recorder]]:
    recorder = Recorder()
    sched = PollScheduler(
        policy,
        poll,
        StatusSet().is_terminal,
        recorder.on_terminal,
        recorder.on_error,
        clock=clock,
        **options,
    )
    sched.start()
    try:
        yield sched, recorder
    finally:
        await sched.close()


# -- the verdict, without an event loop -------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "waited", "verdict"),
    [
        (api_error(wa.AuthenticationError, 401), 999.0, PollVerdict.AGAIN),
        (api_error(wa.CredentialsError, 401), 0.0, PollVerdict.FAIL),
        (api_error(wa.PermissionDeniedError, 403), 0.0, PollVerdict.FAIL),
        (api_error(wa.BadRequestError, 400), 0.0, PollVerdict.FAIL),
        (api_error(wa.NotFoundError, 404), 29.9, PollVerdict.AGAIN),
        (api_error(wa.NotFoundError, 404), 30.0, PollVerdict.FAIL),
        (api_error(wa.RateLimitError, 429), 0.0, PollVerdict.SLOW_DOWN),
        (api_error(wa.ServerError, 503), 0.0, PollVerdict.AGAIN),
        (api_error(wa.ConflictError, 409), 0.0, PollVerdict.AGAIN),
        (wa.TransportError("reset"), 0.0, PollVerdict.AGAIN),
        (wa.SessionClosedError("closed"), 0.0, PollVerdict.FAIL),
        (KeyError("a bug"), 0.0, PollVerdict.AGAIN),
    ],
)
def test_poll_error_verdicts(error: Exception, waited: float, verdict: PollVerdict) -> None:
    assert poll_error_verdict(error, waited=waited, not_found_grace=30.0) is verdict


def test_the_grace_must_not_be_negative() -> None:
    with pytest.raises(wa.ConfigurationError):
        wa.PollPolicy(not_found_grace=-1)
    assert wa.PollPolicy(not_found_grace=0).not_found_grace == 0


# -- the scheduler: which poll errors end a wait -------------------------------------------


async def test_a_plain_401_is_transient_and_polling_goes_on() -> None:
    auth = api_error(wa.AuthenticationError, 401)
    poll = Script(auth, auth, auth, "COMPLETED")
    async with scheduler(poll) as (sched, rec):
        sched.add(WF, delay=0)
        await rec.settled()
    assert rec.errors == [] and [wid for wid, _ in rec.done] == [WF]
    assert poll.calls == 4


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (wa.CredentialsError, 401),
        (wa.PermissionDeniedError, 403),
        (wa.BadRequestError, 400),
    ],
)
async def test_errors_that_cannot_heal_fail_the_wait(cls: type[wa.APIError], status: int) -> None:
    poll = Script(api_error(cls, status), "COMPLETED")
    async with scheduler(poll) as (sched, rec):
        sched.add(WF, delay=0)
        await rec.settled()
        assert len(sched) == 0
    assert [(wid, type(exc)) for wid, exc in rec.errors] == [(WF, cls)]
    assert rec.done == [] and poll.calls == 1


async def test_404s_are_tolerated_for_the_grace_period_then_fail_the_wait() -> None:
    clock = SkewClock()
    policy = wa.PollPolicy(initial_delay=0, max_interval=0.02, jitter=0, not_found_grace=30)
    poll = Script(api_error(wa.NotFoundError, 404))
    async with scheduler(poll, policy, clock=clock) as (sched, rec):
        sched.add(WF, delay=0)
        await eventually(lambda: poll.calls >= 3, "three polls")
        assert rec.errors == [] and len(sched) == 1  # inside the grace: polled on
        clock.skew = 31.0  # the grace has passed
        await rec.settled()
    assert [(wid, type(exc)) for wid, exc in rec.errors] == [(WF, wa.NotFoundError)]


async def test_a_workflow_that_appears_within_the_grace_completes() -> None:
    missing = api_error(wa.NotFoundError, 404)
    poll = Script(missing, missing, "IN_PROGRESS", "COMPLETED")
    async with scheduler(poll) as (sched, rec):
        sched.add(WF, delay=0)
        await rec.settled()
    assert rec.errors == [] and rec.done and poll.calls == 4


@pytest.mark.parametrize(
    "fault",
    [
        wa.ServerError(502, method="GET", path="/w"),
        wa.ConflictError(409, method="GET", path="/w"),
        wa.TransportError("connection reset"),
        wa.DecodeError("GET /w: unexpected answer"),
        ConnectionResetError(),
        ValueError("a bug"),
    ],
)
async def test_transient_faults_reschedule(fault: BaseException) -> None:
    poll = Script(fault, fault, "COMPLETED")
    async with scheduler(poll) as (sched, rec):
        sched.add(WF, delay=0)
        await rec.settled()
    assert rec.errors == [] and len(rec.done) == 1


# -- the scheduler: answers and bugs that used to hang a wait --------------------------------


async def test_a_poll_answer_that_is_not_a_workflow_does_not_stall_the_entry() -> None:
    poll = Script(None, "COMPLETED")  # e.g. a bug in a custom poll function
    async with scheduler(poll) as (sched, rec):
        sched.add(WF, delay=0)
        await rec.settled()
    assert len(rec.done) == 1


async def test_a_failing_callback_does_not_stall_the_entry() -> None:
    calls = 0
    rec = Recorder()

    def on_terminal(wid: str, workflow: wa.Workflow) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the caller's code")
        rec.on_terminal(wid, workflow)

    sched = PollScheduler(
        QUICK, Script("COMPLETED"), StatusSet().is_terminal, on_terminal, rec.on_error
    )
    sched.start()
    try:
        sched.add(WF, delay=0)
        await rec.settled()
    finally:
        await sched.close()
    assert calls == 2 and len(rec.done) == 1


async def test_a_terminal_answer_for_another_workflow_does_not_resolve_the_wait() -> None:
    other = wa.Workflow(id="00000000-0000-4000-8000-000000000000", status="COMPLETED")
    poll = Script(other, wa.Workflow(id=WF.upper(), status="COMPLETED"))
    async with scheduler(poll) as (sched, rec):
        sched.add(WF, delay=0)
        await rec.settled()
    assert poll.calls == 2
    ((wid, workflow),) = rec.done
    assert wid == WF and workflow.id == WF  # the id waited for, whatever the answer spelled


async def test_the_scheduler_task_survives_a_bug_in_its_loop() -> None:
    failures = [RuntimeError("bus.healthy raised")]

    def stretch_allowed() -> bool:
        if failures:
            raise failures.pop()
        return True

    async with scheduler(Script("COMPLETED"), stretch_allowed=stretch_allowed) as (sched, rec):
        sched.add(WF, delay=0)
        await rec.settled()
    assert len(rec.done) == 1


# -- the engine: a webhook still resolves, errors name the workflow --------------------------


@asynccontextmanager
async def engine(poll: Callable[[str], Any]) -> AsyncIterator[WaitEngine]:
    waiting = WaitEngine(statuses=StatusSet(), policy=QUICK, bus=InMemoryBus(), poll=poll)
    try:
        yield waiting
    finally:
        await waiting.close()


async def test_a_webhook_resolves_a_wait_whose_polls_keep_getting_401() -> None:
    poll = Script(api_error(wa.AuthenticationError, 401))
    async with engine(poll) as waiting:
        task = asyncio.create_task(waiting.completion(WF, first_poll=0))
        await eventually(lambda: poll.calls >= 3, "three polls")
        assert not task.done()
        assert await waiting.publish(event(WF, "COMPLETED"))
        async with asyncio.timeout(10):
            completion = await task
    assert completion.channel is wa.Channel.WEBHOOK


async def test_a_poll_error_on_the_future_carries_the_workflow_id() -> None:
    async with engine(Script(api_error(wa.PermissionDeniedError, 403, "x"))) as waiting:
        with pytest.raises(wa.PermissionDeniedError) as info:
            async with asyncio.timeout(10):
                await waiting.completion(WF, first_poll=0)
    assert info.value.workflow_id == WF


async def test_closing_fails_each_wait_with_its_own_workflow_id() -> None:
    ids = [WF, "00000000-0000-4000-8000-000000000001"]
    async with engine(Script("IN_PROGRESS")) as waiting:
        tasks = [asyncio.create_task(waiting.completion(wid, first_poll=0)) for wid in ids]
        await eventually(lambda: len(waiting.pending()) >= 2, "both waits pending")
        await waiting.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, wa.SessionClosedError) for r in results)
    assert [r.workflow_id for r in results if isinstance(r, wa.WorkflowsError)] == ids


# -- end to end: a tiny fake API on a localhost socket ---------------------------------------


AGAIN_NOW = {"Retry-After": "0"}


class FakeAPI:
    """Tokens revoked on demand; scripted statuses for polls and for the result."""

    def __init__(
        self,
        polls: list[int | str],
        results: list[int],
        *,
        run: int | str = "IN_PROGRESS",
    ) -> None:
        self.polls = polls
        self.results = results
        self.run_answer = run
        self.authorizations = 0
        self.seen: list[tuple[str, int]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/auth/authorize", self.authorize)
        app.router.add_post("/workflows/run", self.run)
        app.router.add_get("/workflows/{id}", self.get)
        app.router.add_get("/workflows/{id}/result", self.result)
        return app

    def _next(self, script: list[Any]) -> Any:
        return script.pop(0) if len(script) > 1 else script[0]

    async def authorize(self, request: web.Request) -> web.Response:
        self.authorizations += 1
        token = f"t{self.authorizations}"
        return web.json_response({"accessToken": token, "refreshToken": "r", "expiryDuration": 600})

    async def run(self, request: web.Request) -> web.Response:
        if isinstance(self.run_answer, int):
            return web.json_response({"error": "nope"}, status=self.run_answer)
        return web.json_response({"id": WF, "caseId": "c", "status": self.run_answer}, status=201)

    def count(self, kind: str) -> int:
        return sum(1 for seen, _ in self.seen if seen == kind)

    async def get(self, request: web.Request) -> web.Response:
        answer = self._next(self.polls)
        self.seen.append(("poll", answer if isinstance(answer, int) else 200))
        if isinstance(answer, int):
            return web.json_response({"error": "nope"}, status=answer, headers=AGAIN_NOW)
        return web.json_response({"id": request.match_info["id"], "status": answer})

    async def result(self, request: web.Request) -> web.Response:
        status = self._next(self.results)
        self.seen.append(("result", status))
        if status != 200:
            return web.json_response(
                {"error": "result_not_ready"}, status=status, headers=AGAIN_NOW
            )
        return web.json_response({"workflowId": request.match_info["id"], "score": 1})


@asynccontextmanager
async def fake_api(api: FakeAPI) -> AsyncIterator[wa.Session]:
    async with serve(api.app()) as served:
        session = wa.Session(
            served.url,
            wa.KeySecretAuth("k", "s"),
            allow_insecure_http=True,
            poll=wa.PollPolicy(initial_delay=0.05, max_interval=0.1, jitter=0),
            retry=wa.RetryPolicy.none(),
            verify_webhooks=False,  # local only: tests post unsigned webhooks
        )
        async with session:
            yield session


async def test_end_to_end_polls_answered_401_are_renewed_and_polled_on() -> None:
    api = FakeAPI(polls=[401, 401, 401, 401, "IN_PROGRESS", "COMPLETED"], results=[409, 200])
    async with fake_api(api) as session:
        outcome = await session.run_and_wait("c", "kyc", timeout=20)
    assert outcome.channel is wa.Channel.POLL and outcome.result is not None
    assert outcome.result["score"] == 1
    assert api.authorizations >= 2  # a 401 led to a renewal
    assert ("result", 409) in api.seen


async def test_end_to_end_a_webhook_resolves_while_polls_get_401() -> None:
    api = FakeAPI(polls=[401], results=[200])
    async with fake_api(api) as session:
        task = asyncio.create_task(session.run_and_wait("c", "kyc", timeout=20))
        await eventually(
            lambda: sum(1 for kind, _ in api.seen if kind == "poll") >= 4,
            "four polls",
            interval=0.02,
        )
        assert not task.done()
        body = json.dumps({"workflowId": WF, "status": "COMPLETED", "eventId": "e-1"}).encode()
        answer = await session.webhook_core().receive("POST", {}, body)  # the webhook arrives
        assert answer.status == 200
        async with asyncio.timeout(10):
            outcome = await task
    assert outcome.channel is wa.Channel.WEBHOOK and outcome.result is not None


async def test_a_stray_cancelled_error_from_a_poll_does_not_stall_the_entry() -> None:
    poll = Script(asyncio.CancelledError(), "COMPLETED")  # e.g. leaked by a library below
    async with scheduler(poll) as (sched, rec):
        sched.add(WF, delay=0)
        await rec.settled()
    assert len(rec.done) == 1 and poll.calls == 2


async def test_a_dead_scheduler_task_is_restarted_by_the_next_wait() -> None:
    async with engine(Script("COMPLETED")) as waiting:
        await waiting.start()
        task = waiting.scheduler._task
        assert task is not None
        task.cancel()  # whatever killed it, waits must not hang
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with asyncio.timeout(10):
            completion = await waiting.completion(WF, first_poll=0)
    assert completion.channel is wa.Channel.POLL


class FlakyBus(InMemoryBus):
    async def last_terminal(self, workflow_ids: list[str]) -> list[wa.WebhookEvent]:
        raise ConnectionResetError("the bus is down")


async def test_a_bus_lookup_failure_leaves_the_wait_to_polling() -> None:
    waiting = WaitEngine(
        statuses=StatusSet(), policy=QUICK, bus=FlakyBus(), poll=Script("COMPLETED")
    )
    try:
        async with asyncio.timeout(10):
            completion = await waiting.completion(WF, first_poll=0)
    finally:
        await waiting.close()
    assert completion.channel is wa.Channel.POLL
