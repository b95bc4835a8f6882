"""Replays after the old one-hour window, terminal statuses as final, and memory bounded by bytes
(issue 10, item 10). Pure or nearly: clocks are injected, nothing waits for real time."""

from __future__ import annotations

import asyncio
import json

import workflows_async as wa
from workflows_async._metrics import publish_outcome
from workflows_async._ttl import TTLMap
from workflows_async.bus import InMemoryBus
from workflows_async.engine import _PUBLISHED_TTL, WaitEngine
from workflows_async.events import REPLAY_WINDOW, parse_event
from workflows_async.hooks import EventHooks
from workflows_async.registry import Registry
from workflows_async.statuses import StatusSet

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def event(
    workflow_id: str, status: str, event_id: str | None = None, pad: int = 0
) -> wa.WebhookEvent:
    body: dict[str, str] = {"workflowId": workflow_id, "status": status}
    if event_id:
        body["eventId"] = event_id
    if pad:
        body["pad"] = "x" * pad
    return parse_event(json.dumps(body).encode())


async def never(workflow_id: str) -> wa.Workflow:
    raise AssertionError("no poll expected")


# -- TTLMap ------------------------------------------------------------------------------------


def test_expired_entries_anywhere_do_not_hold_slots() -> None:
    clock = Clock()
    ttl: TTLMap[bool] = TTLMap(1000.0, 4, clock)
    ttl.put("long-1", True)  # the oldest entry lives long...
    for i in range(3):
        ttl.put(f"short-{i}", True, ttl=10.0)  # ...the newer ones expire soon
    clock.now = 11.0
    for i in range(3):
        ttl.put(f"new-{i}", True)
    # The expired short claims made room; nothing that lives was evicted.
    assert ttl.get("long-1") is True
    assert all(ttl.get(f"new-{i}") is True for i in range(3))
    assert len(ttl) == 4


def test_published_window_is_time_not_half_the_slots() -> None:
    """The old bus kept 10 s pending claims beside the published marks: half the slots held
    stale claims, so a mark was evicted after ~max/2 events, long before its time."""
    clock = Clock()
    claims: TTLMap[bool] = TTLMap(3600.0, 100, clock)
    claims.add("published:first", True)
    for i in range(60):
        claims.add(f"event:{i}", True, ttl=10.0)
        clock.now += 11.0  # each pending claim has expired before the next event
        claims.add(f"published:{i}", True)
    assert claims.get("published:first") is True  # 60 events later, well inside its hour


def test_byte_budget_evicts_oldest_first() -> None:
    clock = Clock()
    ttl: TTLMap[bytes] = TTLMap(1000.0, 1_000_000, clock, max_bytes=10_000)
    for i in range(20):
        ttl.put(str(i), b"x", size=1000)
    assert ttl.bytes <= 10_000
    assert ttl.get("0") is None and ttl.get("19") == b"x"
    assert len(ttl) < 10


def test_pop_and_replace_keep_the_byte_count_right() -> None:
    clock = Clock()
    ttl: TTLMap[int] = TTLMap(10.0, 10, clock, max_bytes=1 << 20)
    ttl.put("a", 1, size=500)
    ttl.put("a", 2, size=100)
    before = ttl.bytes
    assert ttl.pop("a") == 2
    assert ttl.bytes == 0 < before
    ttl.put("b", 3, size=100)
    clock.now = 20.0
    assert ttl.get("b") is None and ttl.bytes == 0


# -- the replay window ---------------------------------------------------------------------------


def test_replay_window_defaults_are_at_least_seven_days() -> None:
    assert REPLAY_WINDOW >= 7 * DAY
    assert _PUBLISHED_TTL >= REPLAY_WINDOW
    assert InMemoryBus()._claims.ttl >= REPLAY_WINDOW
    assert Registry(StatusSet())._seen.ttl >= REPLAY_WINDOW


async def test_once_hook_claims_outlive_the_old_hour() -> None:
    ttls: list[float] = []

    async def claim(key: str, ttl: float) -> bool:
        ttls.append(ttl)
        return True

    hooks = EventHooks(claim)
    hooks.add(lambda e: None, once=True, name="h")
    hooks.dispatch(wa.WebhookEvent(workflow_id="w", status="COMPLETED"))
    await hooks.drain()
    assert ttls == [REPLAY_WINDOW]


async def test_a_replay_a_day_later_runs_no_hook_again() -> None:
    clock = Clock()
    bus = InMemoryBus(clock=clock)
    w = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never, clock=clock)
    calls: list[str] = []
    w.hooks.add(lambda e: calls.append(e.status), once=True, name="bill")
    ev = event("wf-1", "COMPLETED")
    assert await w.publish(ev) is True
    await w.hooks.drain()
    clock.now += 2 * DAY  # far past the old one-hour window
    assert await w.publish(ev) is True  # acknowledged...
    await w.hooks.drain()
    assert calls == ["COMPLETED"]  # ...but the hook ran once
    await w.close()


async def test_pending_claim_is_dropped_once_published() -> None:
    clock = Clock()
    bus = InMemoryBus(clock=clock)
    w = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never, clock=clock)
    for i in range(50):
        assert await w.publish(event(f"wf-{i}", "IN_PROGRESS"))
    assert not [k for k in bus._claims._data if k.startswith("event:")]
    assert len(bus._claims) == 50
    await w.close()


async def test_a_terminal_status_is_final() -> None:
    clock = Clock()
    bus = InMemoryBus(clock=clock)
    w = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never, clock=clock)
    calls: list[str] = []
    w.hooks.add(lambda e: calls.append(e.status), once=True, name="bill")
    w.hooks.add(lambda e: calls.append("plain:" + e.status))
    assert await w.publish(event("wf-1", "COMPLETED", "e-1"))
    # A later event for the same workflow: another status, another event id, a stale notice.
    assert await w.publish(event("wf-1", "FAILED", "e-2")) is True
    assert await w.publish(event("wf-1", "IN_PROGRESS", "e-3")) is True
    await w.hooks.drain()
    assert calls == ["COMPLETED", "plain:COMPLETED"]
    # A waiter that comes later still sees the first terminal status.
    outcome = await asyncio.wait_for(w.completion("wf-1", first_poll=3600), 5)
    assert outcome.workflow.status == "COMPLETED"
    [remembered] = await bus.last_terminal(["wf-1"])
    assert remembered.status == "COMPLETED"
    await w.close()


def test_registry_buffers_are_bounded_by_bytes() -> None:
    registry = Registry(StatusSet(), early_max_bytes=1 << 20, dedup_max_bytes=1 << 20)
    for i in range(200):
        ev = event(f"wf-{i}", "COMPLETED", pad=32 * 1024)
        assert registry.accept(ev)
        registry.deliver(ev)
    assert registry._early.bytes <= 1 << 20
    assert len(registry._early) < 40  # 200 events of 32 KiB do not fit in 1 MiB


async def test_bus_remembered_events_are_bounded_by_bytes() -> None:
    bus = InMemoryBus(max_bytes=1 << 20)
    for i in range(200):
        await bus.publish(event(f"wf-{i}", "COMPLETED", pad=32 * 1024), terminal=True)
    assert bus._terminal.bytes <= 1 << 20
    assert await bus.last_terminal(["wf-0"]) == []
    assert len(await bus.last_terminal(["wf-199"])) == 1


async def test_a_copy_racing_the_pending_release_is_not_published_again() -> None:
    """A copy that looked before the mark was set and claims after the pending claim was
    dropped must still be recognised as a copy."""
    clock = Clock()

    class RacyBus(InMemoryBus):
        published = 0
        first_look = True

        async def publish(self, event: wa.WebhookEvent, *, terminal: bool) -> bool:
            self.published += 1
            return await super().publish(event, terminal=terminal)

        async def is_claimed(self, key: str) -> bool:
            if self.first_look and key.startswith("published:"):
                self.first_look = False
                return False  # the copy's first look, just before the mark is set
            return await super().is_claimed(key)

    bus = RacyBus(clock=clock)
    w = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never, clock=clock)
    ev = event("wf-1", "COMPLETED", "e-1")
    await bus.start(w._deliver)
    await bus.claim("published:id:e-1", _PUBLISHED_TTL)  # the other process's publish, done
    assert await w.publish(ev) is True
    assert bus.published == 0 and publish_outcome.get() == "duplicate"
    await w.close()
