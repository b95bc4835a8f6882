"""Publishing a webhook event once per bus: pending claim, published mark, never acknowledged
without having gone anywhere."""

from __future__ import annotations

import asyncio

import pytest

import workflows_async as wa
from workflows_async._metrics import publish_outcome
from workflows_async.bus import InMemoryBus
from workflows_async.engine import WaitEngine
from workflows_async.statuses import StatusSet


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class FlakyBus(InMemoryBus):
    """An in-memory bus whose publish can fail, raise or hang, and whose release can fail."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.mode = "ok"
        self.release_fails = False
        self.published = 0
        self.gate = asyncio.Event()

    async def publish(self, event: wa.WebhookEvent, *, terminal: bool) -> bool:
        if self.mode == "raise":
            raise ConnectionError("bus broke")
        if self.mode == "down":
            return False
        if self.mode == "slow":
            await self.gate.wait()
        self.published += 1
        return await super().publish(event, terminal=terminal)

    async def release(self, key: str) -> None:
        if not self.release_fails:
            await super().release(key)


async def never(workflow_id: str) -> wa.Workflow:
    raise AssertionError("no poll expected")


def waiting(bus: FlakyBus) -> WaitEngine:
    return WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never)


EVENT = wa.WebhookEvent(workflow_id="wf-1", status="COMPLETED", event_id="e-1")


async def test_a_copy_is_acknowledged_only_after_the_event_was_published() -> None:
    bus = FlakyBus(Clock())
    w = waiting(bus)
    assert await w.publish(EVENT) is True
    assert await w.publish(EVENT) is True
    assert bus.published == 1 and publish_outcome.get() == "duplicate"
    await w.close()


async def test_a_copy_during_the_first_publish_is_refused_for_a_retry() -> None:
    bus = FlakyBus(Clock())
    bus.mode = "slow"
    w = waiting(bus)
    first = asyncio.create_task(w.publish(EVENT))
    await asyncio.sleep(0.01)
    assert await w.publish(EVENT) is False  # 503: the platform retries later
    assert publish_outcome.get() == "in_progress"
    bus.gate.set()
    assert await first is True
    assert await w.publish(EVENT) is True and bus.published == 1
    await w.close()


async def test_a_publish_that_raises_gives_the_claim_back() -> None:
    bus = FlakyBus(Clock())
    w = waiting(bus)
    bus.mode = "raise"
    with pytest.raises(ConnectionError):
        await w.publish(EVENT)
    bus.mode = "ok"
    publish_outcome.set(None)
    assert await w.publish(EVENT) is True  # the retry publishes it
    assert bus.published == 1 and publish_outcome.get() is None  # published, not a copy
    await w.close()


class ClaimsOnlyBus(FlakyBus):
    """A bus of the older protocol: no atomic ``publish_once``, so the engine claims."""

    publish_once = None  # type: ignore[assignment]


async def test_a_claim_that_cannot_be_given_back_expires_soon() -> None:
    clock = Clock()
    bus = ClaimsOnlyBus(clock)
    w = waiting(bus)
    bus.mode, bus.release_fails = "down", True
    assert await w.publish(EVENT) is False  # nobody here waits for it: 503
    bus.mode = "ok"
    assert await w.publish(EVENT) is False  # still pending: refused, never acknowledged
    clock.now += 11  # the pending claim expired
    assert await w.publish(EVENT) is True
    assert bus.published == 1
    await w.close()


async def test_an_atomic_bus_leaves_nothing_pending_after_a_failed_publish() -> None:
    bus = FlakyBus(Clock())
    w = waiting(bus)
    bus.mode = "down"
    assert await w.publish(EVENT) is False  # nobody here waits for it: 503
    bus.mode = "ok"
    assert await w.publish(EVENT) is True  # the retry publishes it at once
    assert bus.published == 1 and not bus._publishing
    await w.close()


async def test_bus_down_acknowledges_only_what_a_local_waiter_needed() -> None:
    bus = FlakyBus(Clock())
    bus.mode = "down"
    w = waiting(bus)
    task = asyncio.create_task(w.completion("wf-1", first_poll=3600))
    await asyncio.sleep(0.01)
    assert await w.publish(EVENT) is True
    assert (await task).channel is wa.Channel.WEBHOOK
    other = wa.WebhookEvent(workflow_id="wf-2", status="COMPLETED", event_id="e-2")
    assert await w.publish(other) is False
    await w.close()
