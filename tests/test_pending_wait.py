"""session.wait() returns a hand-driven coroutine (``_pending_wait.PendingWait``): it must
behave like the ``async def`` it replaced wherever a coroutine is accepted, register nothing
until it runs, clean up on every way out, and never be awaited twice."""

from __future__ import annotations

import asyncio
import gc
import math
from typing import Any

import pytest
from test_engine import deliver, left_behind, quiet, session

import workflows_async as wa
from workflows_async._pending_wait import PendingWait

pytestmark = pytest.mark.timeout(30)


async def test_it_is_a_coroutine_for_asyncio() -> None:
    async with session() as s:
        quiet(s)
        pending = s.wait("wf-1", timeout=30)
        assert asyncio.iscoroutine(pending)
        assert "wf-1" in repr(pending) and "new" in repr(pending)
        task = asyncio.create_task(pending)
        together = asyncio.gather(
            s.wait("wf-1", timeout=30), s.wait("wf-2", timeout=30), return_exceptions=True
        )
        async with asyncio.timeout(10):
            while sorted(s.pending()) != ["wf-1", "wf-2"] or s.stats().waits.pending < 3:
                await asyncio.sleep(0)
        assert "pending" in repr(pending)
        assert await deliver(s, "wf-1", "FAILED")
        s._waiting.registry.ended_event(wa.WebhookEvent(workflow_id="wf-2", status="FAILED"))
        with pytest.raises(wa.WorkflowFailed):
            await task
        outcomes = await together
        assert [type(outcome) for outcome in outcomes] == [wa.WorkflowFailed] * 2
        assert "over" in repr(pending)
        assert left_behind(s) == (0, 0, 0, [])


async def test_a_wait_never_awaited_registers_nothing() -> None:
    async with session() as s:
        quiet(s)
        pending = s.wait("wf-1", timeout=30)
        await asyncio.sleep(0)
        assert left_behind(s) == (0, 0, 0, [])
        pending.close()  # as the garbage collector would
        pending.close()  # twice is fine
        del pending
        gc.collect()
        assert left_behind(s) == (0, 0, 0, [])
        assert s.stats().waits.pending == 0


async def test_a_wait_cannot_be_awaited_twice() -> None:
    async with session() as s:
        quiet(s)
        await deliver(s, "wf-1", "FAILED")  # kept for a later waiter (early event)
        pending = s.wait("wf-1", timeout=30, raise_on_failure=False)
        outcome = await pending  # the early event: no suspension at all
        assert outcome.workflow.status == "FAILED" and outcome.channel is wa.Channel.WEBHOOK
        with pytest.raises(RuntimeError, match="already awaited"):
            await pending
        assert left_behind(s) == (0, 0, 0, [])


async def test_cancelling_a_pending_wait_cleans_up_and_counts_it() -> None:
    async with session() as s:
        quiet(s)
        task = asyncio.create_task(s.wait("wf-1", timeout=30))
        async with asyncio.timeout(10):
            while not s.pending():
                await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert left_behind(s) == (0, 0, 0, [])
        assert s.stats().waits.cancelled == 1


async def test_wait_for_around_a_pending_wait() -> None:
    async with session() as s:
        quiet(s)
        with pytest.raises(TimeoutError) as caught:
            await asyncio.wait_for(s.wait("wf-1", timeout=30), 0.05)
        assert not isinstance(caught.value, wa.WorkflowTimeout)  # wait_for's own
        assert left_behind(s) == (0, 0, 0, [])


async def test_throw_into_a_pending_wait_ends_it_with_that_error() -> None:
    async with session() as s:
        quiet(s)
        pending = s.wait("wf-1", timeout=30)
        yielded = pending.send(None)  # registered: the engine's future is what it waits on
        assert isinstance(yielded, asyncio.Future) and s.pending() == ["wf-1"]
        with pytest.raises(wa.TransportError) as caught:
            pending.throw(wa.TransportError("boom"))
        assert caught.value.workflow_id == "wf-1"  # named, as every error of a wait
        assert left_behind(s) == (0, 0, 0, [])
        assert s.stats().waits.failed == 1
        with pytest.raises(RuntimeError):
            pending.send(None)


async def test_a_closed_session_refuses_and_names_the_workflow() -> None:
    s = session()
    await s.close()
    with pytest.raises(wa.SessionClosedError) as caught:
        await s.wait("wf-1")
    assert caught.value.workflow_id == "wf-1"


async def test_closing_fails_pending_waits_with_the_id() -> None:
    s = session()
    quiet(s)
    task = asyncio.create_task(s.wait("wf-1", timeout=30))
    async with asyncio.timeout(10):
        while not s.pending():
            await asyncio.sleep(0)
    await s.close()
    with pytest.raises(wa.SessionClosedError) as caught:
        await task
    assert caught.value.workflow_id == "wf-1"


async def test_a_bad_id_is_refused_when_awaited() -> None:
    async with session() as s:
        pending = s.wait("../etc", timeout=30)  # the call itself does not raise
        with pytest.raises(wa.ConfigurationError):
            await pending
        assert left_behind(s) == (0, 0, 0, [])


async def test_the_first_wait_starts_the_engine() -> None:
    s = session()
    quiet(s)
    assert not s._waiting.ready
    task = asyncio.create_task(s.wait("wf-1", timeout=30))
    async with asyncio.timeout(10):
        while not s.pending():
            await asyncio.sleep(0)
    assert s._waiting.ready
    assert await deliver(s, "wf-1", "FAILED")
    with pytest.raises(wa.WorkflowFailed):
        await task
    await s.close()


async def test_the_deadline_fires_on_time_within_a_tick() -> None:
    async with session() as s:
        quiet(s)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(wa.WorkflowTimeout):
            await s.wait("wf-1", timeout=0.1)
        assert loop.time() - started >= 0.1  # never early
        assert s.stats().waits.timed_out == 1


@pytest.mark.parametrize("bad", [math.nan, 0, -1.0, "5", True, None])
async def test_an_unusable_timeout_is_refused_before_anything_happens(bad: Any) -> None:
    async with session() as s:
        quiet(s)
        with pytest.raises(wa.ConfigurationError, match="timeout"):
            await s.wait("wf-1", timeout=bad)
        # run_and_wait checks it before the run request (nothing listens at this address:
        # a request would have raised a transport error instead)
        with pytest.raises(wa.ConfigurationError, match="timeout"):
            await s.run_and_wait("case-1", "wd-1", timeout=bad)
        assert left_behind(s) == (0, 0, 0, [])
        assert s.stats().waits.pending == 0


async def test_an_infinite_timeout_holds_no_deadline() -> None:
    async with session() as s:
        quiet(s)
        task = asyncio.create_task(s.wait("wf-1", timeout=math.inf))
        async with asyncio.timeout(10):
            while not s.pending():
                await asyncio.sleep(0)
        assert len(s._deadlines) == 1 and s._deadlines._items == 0
        s._waiting.registry.ended_event(wa.WebhookEvent(workflow_id="wf-1", status="FAILED"))
        with pytest.raises(wa.WorkflowFailed):
            await task
        assert left_behind(s) == (0, 0, 0, [])


async def test_a_second_awaiter_is_refused_and_the_first_keeps_waiting() -> None:
    async with session() as s:
        quiet(s)
        pending = s.wait("wf-1", timeout=30, raise_on_failure=False)
        first = asyncio.create_task(pending)
        async with asyncio.timeout(10):
            while not s.pending():
                await asyncio.sleep(0)

        async def again() -> object:
            return await pending

        with pytest.raises(RuntimeError, match="awaited already"):
            await again()  # as with a native coroutine awaited from two tasks
        assert s.pending() == ["wf-1"] and not first.done()  # the first wait is intact
        s._waiting.registry.ended_event(wa.WebhookEvent(workflow_id="wf-1", status="FAILED"))
        outcome = await first
        assert outcome.workflow.status == "FAILED"
        assert left_behind(s) == (0, 0, 0, [])


async def test_a_wait_and_its_poll_entry_start_at_one_clock_reading() -> None:
    """One float, not two: the entry's start is the wait's (the Session's Recorder and its
    scheduler keep one clock), and a poll is due from then on."""
    async with session() as s:
        quiet(s)
        pending = s.wait("wf-1", timeout=30)
        assert isinstance(pending, PendingWait)
        task = asyncio.create_task(pending)
        async with asyncio.timeout(10):
            while "wf-1" not in s._waiting.scheduler.schedule:
                await asyncio.sleep(0)
        entry = s._waiting.scheduler.schedule._entries["wf-1"]
        assert entry.added is pending.started
        assert s._waiting.scheduler.schedule.due("wf-1") == pending.started  # first_poll 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert left_behind(s) == (0, 0, 0, [])
