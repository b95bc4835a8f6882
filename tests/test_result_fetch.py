"""The result fetch after the end is known: retried inside the wait's deadline when the API may
still come round; and every error out of run_and_wait/wait names the workflow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eventually import eventually
from test_engine_faults import WF, FakeAPI, fake_api

import workflows_async as wa
from workflows_async._result_fetch import MAX_DELAY, fetch_with_retries, result_retry_delay


def err(cls: type[wa.APIError], status: int, retry_after: float | None = None) -> wa.APIError:
    return cls(status, method="GET", path="/workflows/x/result", retry_after=retry_after)


# -- the decision, without an event loop ------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        err(wa.ConflictError, 409),
        err(wa.NotFoundError, 404),
        err(wa.RateLimitError, 429),
        err(wa.ServerError, 502),
        wa.TransportError("reset"),
        wa.RequestTimeout("slow"),
        err(wa.AuthenticationError, 401),  # tokens revoked again after the renewal
    ],
)
def test_errors_that_may_heal_are_retried_with_growing_capped_delays(error: Exception) -> None:
    delays = [result_retry_delay(error, n, 0.999) for n in range(12)]
    assert all(d is not None and 0 < d <= MAX_DELAY for d in delays)
    assert delays == sorted(delays)  # type: ignore[type-var]
    assert delays[-1] == pytest.approx(MAX_DELAY, rel=1e-3)
    assert result_retry_delay(error, 0, 0.0) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "error",
    [
        err(wa.BadRequestError, 400),
        err(wa.PermissionDeniedError, 403),
        err(wa.CredentialsError, 401),
        err(wa.UnsupportedMediaTypeError, 415),
        wa.DecodeError("not an object"),
        wa.SessionClosedError("closed"),
        ValueError("a bug"),
    ],
)
def test_errors_that_cannot_heal_give_up_at_once(error: Exception) -> None:
    assert result_retry_delay(error, 0) is None


def test_retry_after_is_honoured_but_never_a_hot_loop() -> None:
    assert result_retry_delay(err(wa.RateLimitError, 429, 7.0), 0) == 7.0
    assert result_retry_delay(err(wa.ServerError, 503, 2.0), 5) == 2.0
    assert result_retry_delay(err(wa.ConflictError, 409, 0.0), 0) == 0.05


# -- the loop, with an injected sleep ---------------------------------------------------------


async def test_the_loop_fetches_until_an_answer() -> None:
    answers: list[Any] = [err(wa.ConflictError, 409), err(wa.ServerError, 500), "result"]
    slept: list[float] = []

    async def fetch() -> str:
        item = answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return str(item)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    assert await fetch_with_retries(fetch, sleep=sleep, rand=lambda: 0.0) == "result"
    assert slept == [0.25, 0.5]


async def test_the_loop_raises_what_cannot_heal_without_sleeping() -> None:
    slept: list[float] = []

    async def fetch() -> str:
        raise err(wa.PermissionDeniedError, 403)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(wa.PermissionDeniedError):
        await fetch_with_retries(fetch, sleep=sleep)
    assert slept == []


# -- through the Session, against a tiny fake API on a localhost socket ----------------------


async def test_result_not_ready_and_5xx_after_the_end_are_fetched_again() -> None:
    api = FakeAPI(polls=["COMPLETED"], results=[409, 404, 502, 429, 200], run="COMPLETED")
    async with fake_api(api) as session, asyncio.timeout(10):
        outcome = await session.run_and_wait("c", "kyc", timeout=5)
    assert outcome.result is not None and outcome.result["score"] == 1
    assert api.count("result") == 5


async def test_one_deadline_covers_the_result_fetch() -> None:
    api = FakeAPI(polls=["COMPLETED"], results=[409], run="COMPLETED")
    async with fake_api(api) as session, asyncio.timeout(10):
        with pytest.raises(wa.WorkflowTimeout) as info:
            await session.run_and_wait("c", "kyc", timeout=0.5)
    assert info.value.workflow_id == WF and WF in str(info.value)
    assert api.count("result") > 1


async def test_a_result_fetch_refused_for_good_raises_at_once_with_the_id() -> None:
    api = FakeAPI(polls=["COMPLETED"], results=[403], run="COMPLETED")
    async with fake_api(api) as session, asyncio.timeout(10):
        with pytest.raises(wa.PermissionDeniedError) as info:
            await session.run_and_wait("c", "kyc", timeout=30)
    assert info.value.workflow_id == WF
    assert api.count("result") == 1


async def test_wait_result_fetch_error_carries_the_id() -> None:
    api = FakeAPI(polls=["COMPLETED"], results=[400])
    async with fake_api(api) as session, asyncio.timeout(10):
        with pytest.raises(wa.BadRequestError) as info:
            await session.wait(WF, timeout=30)
    assert info.value.workflow_id == WF


@pytest.mark.parametrize("method", ["run_and_wait", "wait"])
async def test_a_poll_error_that_ends_the_wait_carries_the_id(method: str) -> None:
    api = FakeAPI(polls=[403], results=[200])
    async with fake_api(api) as session:
        if method == "wait":
            waited = session.wait(WF, timeout=30)
        else:
            waited = session.run_and_wait("c", "kyc", timeout=30)
        async with asyncio.timeout(10):
            with pytest.raises(wa.PermissionDeniedError) as info:
                await waited
        assert session.pending() == []
    assert info.value.workflow_id == WF


@pytest.mark.parametrize("method", ["run_and_wait", "wait"])
async def test_closing_the_session_while_waiting_names_the_workflow(method: str) -> None:
    api = FakeAPI(polls=["IN_PROGRESS"], results=[200])
    async with fake_api(api) as session:
        if method == "wait":
            task = asyncio.create_task(session.wait(WF, timeout=30))
        else:
            task = asyncio.create_task(session.run_and_wait("c", "kyc", timeout=30))
        await eventually(session.pending, "the wait pending")
        async with asyncio.timeout(10):
            await session.close()
            with pytest.raises(wa.SessionClosedError) as info:
                await task
    assert info.value.workflow_id == WF


async def test_an_error_before_the_run_answered_has_no_id() -> None:
    api = FakeAPI(polls=["COMPLETED"], results=[200], run=400)
    async with fake_api(api) as session, asyncio.timeout(10):
        with pytest.raises(wa.BadRequestError) as info:
            await session.run_and_wait("c", "kyc", timeout=30)
    assert info.value.workflow_id is None
