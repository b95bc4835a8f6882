"""run_and_wait and wait against the Simulator over real sockets: webhook first, polling as
the fallback, one deadline, nothing lost, nothing left behind."""

from __future__ import annotations

import asyncio
import re
import resource
import time
from collections import Counter

import aiohttp
import pytest
from eventually import eventually
from stack import FAST_POLL, stack

import workflows_async as wa
from workflows_async.testing import Faults, WorkflowDefinition

_POLL_PATH = re.compile(r"/workflows/[^/]+")


def library_tasks() -> list[asyncio.Task[object]]:
    """Running tasks whose coroutine is the library's own (not the Simulator's or aiohttp's)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if "/workflows_async/" in filename and "/testing/" not in filename:
            found.append(task)
    return found


async def new_case(session: wa.Session) -> str:
    return (await session.create_case(first_name="Ann", email="ann@example.test")).id


async def test_completes_by_webhook_with_zero_polls() -> None:
    async with stack() as s:
        outcome = await s.session.run_and_wait(await new_case(s.session), "kyc-basic", timeout=30)
        assert outcome.channel is wa.Channel.WEBHOOK
        assert outcome.workflow.status == "COMPLETED"
        assert outcome.result is not None and outcome.result.case_id == outcome.workflow.case_id
        assert outcome.elapsed > 0
        assert s.polls() == 0


async def test_parameters_are_created_and_used() -> None:
    async with stack() as s:
        outcome = await s.session.run_and_wait(
            await new_case(s.session), "kyc-basic", parameters={"country": "SE"}, timeout=30
        )
        assert outcome.result is not None and outcome.result["parameters"] == {"country": "SE"}
        assert s.sim.calls_by_route["POST /parameters"] == 1


async def test_terminal_run_response_needs_no_webhook_and_no_poll() -> None:
    async with stack() as s:
        outcome = await s.session.run_and_wait(await new_case(s.session), "kyc-instant", timeout=30)
        assert outcome.channel is wa.Channel.RUN
        assert s.polls() == 0


async def test_completes_by_polling_when_every_webhook_is_lost() -> None:
    async with stack(faults=Faults(drop_webhooks=1.0)) as s:
        outcome = await s.session.run_and_wait(await new_case(s.session), "kyc-basic", timeout=30)
        assert outcome.channel is wa.Channel.POLL
        assert outcome.workflow.status == "COMPLETED"
        assert s.polls() >= 1


async def test_completes_when_no_receiver_is_configured() -> None:
    async with stack(register_webhook=False) as s:
        outcome = await s.session.run_and_wait(
            await new_case(s.session), "kyc-awaiting", timeout=30
        )
        assert outcome.channel is wa.Channel.POLL


async def test_webhook_before_the_run_response_is_not_lost() -> None:
    async with stack(faults=Faults(webhook_before_response=True)) as s:
        s.sim.define("instant-hook", WorkflowDefinition(statuses=("COMPLETED",), duration=0.0))
        outcome = await s.session.run_and_wait(
            await new_case(s.session), "instant-hook", timeout=30
        )
        assert outcome.workflow.status == "COMPLETED"
        assert outcome.channel in (wa.Channel.WEBHOOK, wa.Channel.RUN)
        assert s.polls() == 0


async def test_final_webhook_overtaking_the_run_response_resolves_at_registration() -> None:
    async with stack(faults=Faults(run_response_delay=0.5)) as s:
        s.sim.define(
            "quick", WorkflowDefinition(statuses=("IN_PROGRESS", "COMPLETED"), duration=0.01)
        )
        case_id = await new_case(s.session)
        outcome = await s.session.run_and_wait(case_id, "quick", timeout=30)
        # The run answered IN_PROGRESS half a second after COMPLETED had been delivered.
        assert outcome.channel is wa.Channel.WEBHOOK
        assert outcome.workflow.status == "COMPLETED"
        assert s.polls() == 0
        attempts = [a for a in s.sim.webhook_attempts if a.workflow_id == outcome.workflow.id]
        assert any(a.status == "COMPLETED" and a.outcome == 200 for a in attempts)


async def test_duplicates_and_out_of_order_events_dispatch_once() -> None:
    async with stack(faults=Faults(duplicate_webhooks=1.0, out_of_order=True)) as s:
        seen: list[wa.WebhookEvent] = []
        s.session.on_event(seen.append)
        outcome = await s.session.run_and_wait(
            await new_case(s.session), "kyc-awaiting", timeout=30
        )
        assert outcome.workflow.status == "COMPLETED"
        await s.sim.wait_idle()
        keys = Counter(event.dedup_key for event in seen)
        assert keys and all(count == 1 for count in keys.values())
        assert s.sim.webhooks_delivered > len(seen)  # the copies were refused as duplicates


async def test_failure_status_raises_with_the_workflow() -> None:
    async with stack() as s:
        case_id = await new_case(s.session)
        with pytest.raises(wa.WorkflowFailed) as info:
            await s.session.run_and_wait(case_id, "kyc-failing", timeout=30)
        assert info.value.workflow.status == "FAILED"
        assert info.value.workflow_id == info.value.workflow.id
        outcome = await s.session.run_and_wait(
            case_id, "kyc-failing", timeout=30, raise_on_failure=False
        )
        assert outcome.result is None and not outcome.succeeded
        assert outcome.workflow.status == "FAILED"


async def test_timeout_carries_the_id_and_wait_finishes_it() -> None:
    async with stack(faults=Faults(drop_webhooks=1.0)) as s:
        s.sim.define(
            "slow", WorkflowDefinition(statuses=("IN_PROGRESS", "COMPLETED"), duration=1e6)
        )
        case_id = await new_case(s.session)
        with pytest.raises(wa.WorkflowTimeout) as info:
            await s.session.run_and_wait(case_id, "slow", timeout=2.0)
        assert isinstance(info.value, TimeoutError)
        workflow_id = info.value.workflow_id
        assert workflow_id and workflow_id in str(info.value)
        assert s.session.pending() == []
        await s.sim.complete(workflow_id)  # it ends later; its webhook is lost
        outcome = await s.session.wait(workflow_id, timeout=30)
        assert outcome.workflow.id == workflow_id
        assert outcome.workflow.status == "COMPLETED"
        assert outcome.channel is wa.Channel.POLL


async def test_wait_in_a_second_session_finishes_a_workflow_started_elsewhere() -> None:
    async with stack() as s:
        workflow = await s.session.run_workflow(await new_case(s.session), "kyc-basic")
        other = wa.Session(
            s.sim.base_url,
            wa.KeySecretAuth(s.sim.key, s.sim.secret),
            allow_insecure_http=True,
            poll=FAST_POLL,
        )
        async with other:
            outcome = await other.wait(workflow.id, timeout=30)
        assert outcome.workflow.status == "COMPLETED"
        assert outcome.result is not None


async def test_cancellation_leaves_no_residue() -> None:
    async with stack(faults=Faults(drop_webhooks=1.0)) as s:
        s.sim.define("slow", WorkflowDefinition(statuses=("IN_PROGRESS", "COMPLETED"), duration=40))
        case_id = await new_case(s.session)
        waits = [
            asyncio.create_task(s.session.run_and_wait(case_id, "slow", timeout=60))
            for _ in range(20)
        ]
        await eventually(lambda: len(s.session.pending()) >= 20, "20 waits pending")
        assert s.session.stats().polls.scheduled == 20
        # One scheduler task for 20 waiters (plus the 20 callers' own tasks), none per waiter.
        assert len(library_tasks()) <= 1 + 20
        for task in waits:
            task.cancel()
        results = await asyncio.gather(*waits, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert s.session.pending() == []
        assert s.session.stats().polls.scheduled == 0
        await asyncio.sleep(0.05)
        assert [t.get_name() for t in library_tasks()] == ["workflows_async poll scheduler"]


async def test_close_fails_pending_waits() -> None:
    async with stack(faults=Faults(drop_webhooks=1.0)) as s:
        s.sim.define("slow", WorkflowDefinition(statuses=("IN_PROGRESS", "COMPLETED"), duration=40))
        task = asyncio.create_task(s.session.run_and_wait(await new_case(s.session), "slow"))
        await eventually(s.session.pending, "the wait pending")
        await s.session.close()
        with pytest.raises(wa.SessionClosedError):
            await task


async def test_a_thousand_waits_with_lost_webhooks_respect_the_poll_budget() -> None:
    budget = wa.PollPolicy(initial_delay=0.3, max_interval=1.0, rate=100, max_in_flight=10)
    # The budget governs when polls start, so they are timed where they start: in the client
    # (the Simulator's arrival times also carry the loopback's and the loop's jitter). With no
    # connection limit, a poll's request starts in its task's first step, after its token and
    # before the scheduler can take the next one: so at most rate * T + 2 starts fall in any
    # window of T seconds (the bucket's rate * T + 1, plus one token taken just before it).
    starts: list[float] = []

    async def on_start(_: object, __: object, params: aiohttp.TraceRequestStartParams) -> None:
        if params.method == "GET" and _POLL_PATH.fullmatch(params.url.path):
            starts.append(time.monotonic())

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    # No connection limit means up to 1,000 client and 1,000 server sockets at once.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and (hard == resource.RLIM_INFINITY or hard >= 4096):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trace_configs=[trace])
    async with http, stack(poll=budget, faults=Faults(drop_webhooks=0.2), http_session=http) as s:
        case_id = await new_case(s.session)
        outcomes = await asyncio.gather(
            *(s.session.run_and_wait(case_id, "kyc-basic", timeout=120) for _ in range(1000))
        )
        assert len(outcomes) == 1000
        assert all(o.workflow.status == "COMPLETED" for o in outcomes)
        channels = Counter(o.channel for o in outcomes)
        assert channels[wa.Channel.POLL] > 0 and channels[wa.Channel.WEBHOOK] > 0
        poll_times = sorted(starts)
        assert len(poll_times) == s.polls()  # every poll the Simulator saw was timed
        for i, start in enumerate(poll_times):
            in_window = sum(1 for t in poll_times[i : i + 200] if t - start < 1.0)
            assert in_window <= budget.rate + 2
        assert s.session.pending() == []


async def test_a_revoked_token_fails_the_wait_instead_of_polling_until_the_deadline() -> None:
    async with stack(register_webhook=False) as s:
        workflow = await s.session.run_workflow(await new_case(s.session), "kyc-awaiting")
        revoked = wa.Session(
            s.sim.base_url, wa.TokenAuth("revoked"), allow_insecure_http=True, poll=FAST_POLL
        )
        async with revoked:
            try:
                await revoked.get_workflow(workflow.id)
            except wa.CredentialsError:
                pass
            except wa.AuthenticationError:  # a plain 401 is transient for a wait
                pytest.skip("the request path does not raise CredentialsError for a fixed token")
            with pytest.raises(wa.CredentialsError) as info:
                await revoked.wait(workflow.id, timeout=30)
            assert info.value.workflow_id == workflow.id
            assert revoked.pending() == []


async def test_wait_after_close_fails_at_once() -> None:
    async with stack() as s:
        workflow = await s.session.run_workflow(await new_case(s.session), "kyc-awaiting")
        await s.session.close()
        with pytest.raises(wa.SessionClosedError):
            await s.session.wait(workflow.id, timeout=30)
        assert s.session.pending() == []


async def test_a_start_cancelled_half_way_can_be_finished_later() -> None:
    async def hung_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the connection and never answers
        writer.close()

    server = await asyncio.start_server(hung_redis, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        session = wa.Session(
            "https://api.example.test", bus=wa.RedisBus(f"redis://127.0.0.1:{port}/0")
        )
        first = asyncio.create_task(session.start())
        await asyncio.sleep(0.2)
        first.cancel()  # the caller gives up while the bus waits for its first subscription
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(session.start())
        await asyncio.sleep(0.2)
        assert not second.done()  # accepted and waiting, not "already started"
        await session.close()
        with pytest.raises(wa.SessionClosedError):
            await second  # close() releases it at once
        with pytest.raises(wa.SessionClosedError):
            await session.start()
    finally:
        server.close()
