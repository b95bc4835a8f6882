"""The core Session against the Simulator over real localhost sockets: the whole flow, tokens,
and each API fault knob as the client sees it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from eventually import eventually

import workflows_async as wa
from workflows_async.testing import Faults, Simulator

FAST = wa.RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01, max_retry_after=2)


@asynccontextmanager
async def client(
    sim: Simulator, *, auth: wa.Auth | None = None, **options: object
) -> AsyncIterator[wa.Session]:
    options.setdefault("retry", FAST)
    session = wa.Session(
        sim.base_url,
        auth or wa.KeySecretAuth(sim.key, sim.secret),
        allow_insecure_http=True,
        **options,  # type: ignore[arg-type]
    )
    async with session:
        yield session


async def test_full_flow_case_parameters_run_status_result() -> None:
    async with Simulator(time_scale=0.01, seed=1) as sim, client(sim, api_version=1) as session:
        case = await session.create_case(
            first_name="Ada", last_name="Lovelace", personal_number="18151210-0000"
        )
        params = await session.create_parameters("kyc-basic", {"country": "GB", "level": 2})
        workflow = await session.run_workflow(case.id, "kyc-basic", parameters_id=params.id)
        assert workflow.case_id == case.id and not session.statuses.is_terminal(workflow.status)

        async def ended() -> bool:
            return session.statuses.is_terminal((await session.get_workflow(workflow.id)).status)

        await eventually(ended, "the workflow to end")
        result = await session.get_result(workflow.id)
        assert result.case_id == case.id and result.party_id and result.created_date
        assert result["parameters"] == {"country": "GB", "level": 2}
        assert result["case"]["firstName"] == "Ada"
        assert {r.api_version for r in sim.requests if not r.path.startswith("/auth")} == {1}


async def test_unknown_things_are_not_found() -> None:
    async with Simulator(seed=1) as sim, client(sim) as session:
        with pytest.raises(wa.NotFoundError):
            await session.get_workflow("00000000-0000-4000-8000-000000000000")
        case = await session.create_case()
        with pytest.raises(wa.NotFoundError):
            await session.run_workflow(case.id, "no-such-definition")


async def test_expired_tokens_are_refreshed() -> None:
    async with Simulator(token_ttl=0.3, seed=1) as sim:
        auth = wa.KeySecretAuth(sim.key, sim.secret)
        async with client(sim, auth=auth) as session:
            case = await session.create_case()
            await asyncio.sleep(0.4)
            await session.create_case()
            assert sim.calls_by_route["POST /auth/authorize"] == 1
            assert sim.calls_by_route["POST /auth/refresh"] >= 1
            assert case.id


async def test_tokens_expired_early_get_one_renewal_then_a_clear_error() -> None:
    faults = Faults(issue_expired_tokens=True)
    async with Simulator(seed=1, faults=faults) as sim, client(sim) as session:
        with pytest.raises(wa.AuthenticationError):
            await session.create_case()
        assert sim.calls_by_route["POST /cases"] == 2  # the call and its one resend
        sim.faults.issue_expired_tokens = False
        assert (await session.create_case()).id


async def test_wrong_secret_is_an_authentication_error() -> None:
    async with (
        Simulator(seed=1) as sim,
        client(sim, auth=wa.KeySecretAuth(sim.key, "wrong")) as session,
    ):
        with pytest.raises(wa.AuthenticationError) as info:
            await session.create_case()
        assert "wrong" not in str(info.value)


async def test_injected_500s_are_retried_for_gets_only() -> None:
    async with Simulator(seed=1) as sim, client(sim) as session:
        case = await session.create_case()
        workflow = await session.run_workflow(case.id, "kyc-basic")
        sim.faults.error_rate, sim.faults.error_statuses = 1.0, (500,)
        with pytest.raises(wa.ServerError):
            await session.get_workflow(workflow.id)
        assert sim.calls_by_route["GET /workflows/{id}"] == FAST.max_attempts
        with pytest.raises(wa.OutcomeUnknownError) as info:
            await session.create_case()
        assert info.value.status == 500
        assert sim.calls_by_route["POST /cases"] == 2  # one before the fault, one now: no resend


async def test_a_post_that_took_effect_is_never_resent() -> None:
    faults = Faults(error_rate=1.0, error_statuses=(500,), error_after_effect=True)
    async with Simulator(seed=1) as sim, client(sim) as session:
        case = await session.create_case()
        sim.faults = faults
        with pytest.raises(wa.OutcomeUnknownError) as info:
            await session.run_workflow(case.id, "kyc-basic")
        assert info.value.case_id == case.id
        assert info.value.workflow_definition_id == "kyc-basic"
        assert sim.calls_by_route["POST /workflows/run"] == 1
        assert len(sim.workflows) == 1  # created once, not duplicated by a retry


async def test_429_is_retried_even_for_posts() -> None:
    status = 429  # not 503: a gateway may answer 503 after forwarding (tests/test_http.py)
    async with Simulator(seed=3) as sim, client(sim) as session:
        sim.faults.error_statuses, sim.faults.retry_after = (status,), 0.0
        sim.faults.error_rate = 0.5
        cases = [await session.create_case() for _ in range(5)]
        assert len({c.id for c in cases}) == 5
        assert any(r.status == status for r in sim.requests)


async def test_retry_after_above_the_cap_raises_rate_limit() -> None:
    faults = Faults(error_rate=1.0, error_statuses=(429,), retry_after=60)
    async with Simulator(seed=1, faults=faults) as sim, client(sim) as session:
        with pytest.raises(wa.RateLimitError) as info:
            await session.create_case()
        assert info.value.retry_after == 60


async def test_dropped_connections_are_retried_for_gets_not_posts() -> None:
    async with Simulator(seed=5) as sim, client(sim) as session:
        case = await session.create_case()
        workflow = await session.run_workflow(case.id, "kyc-instant")
        sim.faults.disconnect_rate = 1.0
        with pytest.raises(wa.TransportError):
            await session.get_workflow(workflow.id)
        assert sim.calls_by_route["GET /workflows/{id}"] == FAST.max_attempts
        with pytest.raises(wa.OutcomeUnknownError):
            await session.create_case()
        assert sim.calls_by_route["POST /cases"] == 2  # the response was lost: not resent
        assert all(r.fault == "disconnect" for r in sim.requests[-FAST.max_attempts - 1 :])
        sim.faults.disconnect_rate = 0.0
        assert (await session.get_workflow(workflow.id)).id == workflow.id


async def test_latency_beyond_the_request_timeout_is_a_timeout() -> None:
    async with (
        Simulator(seed=1) as sim,
        client(sim, timeout=0.2, retry=wa.RetryPolicy.none()) as session,
    ):
        case = await session.create_case()
        sim.faults.latency = 0.5
        with pytest.raises(wa.RequestTimeout):
            await session.get_workflow(case.id)


async def test_webhook_key_is_served_and_fetched() -> None:
    async with Simulator(seed=1) as sim, client(sim) as session:
        pem = await session.get_webhook_key(sim.kid)
        assert pem.startswith("-----BEGIN PUBLIC KEY-----")
        assert pem.strip() == sim.public_key_pem().strip()
