"""The lean in-process publish path (issue 16): the in-process bus publishes without awaiting,
keeps one mark per event and one memory per ended workflow, and the registry, the early-event
buffer and the lost-webhook bookkeeping keep no copies of their own; nothing is lost on the
way: a completion that comes before its wait is still found, a failed publish leaves no mark."""

from __future__ import annotations

import asyncio
import gc

import pytest

import workflows_async as wa
from workflows_async._ttl import TTLMap
from workflows_async.bus import InMemoryBus
from workflows_async.engine import _PUBLISHED_TTL, WaitEngine
from workflows_async.statuses import StatusSet


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def never(workflow_id: str) -> wa.Workflow:
    raise AssertionError("no poll expected")


def waiting(bus: InMemoryBus, clock: Clock | None = None) -> WaitEngine:
    clock = clock or Clock()
    return WaitEngine(
        statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never, clock=clock
    )


def event(wid: str, status: str = "COMPLETED", event_id: str | None = None) -> wa.WebhookEvent:
    return wa.WebhookEvent(workflow_id=wid, status=status, event_id=event_id)


async def test_the_in_process_bus_publishes_once_without_awaiting() -> None:
    bus = InMemoryBus()
    delivered: list[wa.WebhookEvent] = []
    await bus.start(delivered.append)
    ev = event("wf-1", event_id="e-1")

    def once() -> str | None:
        return bus.publish_once_now(
            ev, terminal=True, mark="published:id:e-1", mark_ttl=_PUBLISHED_TTL
        )

    assert once() == "published"
    assert delivered == [ev]  # delivered before it returned
    assert once() == "duplicate"
    assert delivered == [ev]
    assert bus.last_terminal_now(["wf-1"]) == [ev]


async def test_a_subclass_whose_publish_may_await_is_not_answered_synchronously() -> None:
    class SlowBus(InMemoryBus):
        async def publish(self, event: wa.WebhookEvent, *, terminal: bool) -> bool:
            await asyncio.sleep(0)
            return await super().publish(event, terminal=terminal)

    bus = SlowBus()
    ev = event("wf-1")
    assert bus.publish_once_now(ev, terminal=True, mark="m", mark_ttl=60.0) is None
    assert await bus.publish_once(ev, terminal=True, mark="m", mark_ttl=60.0) == "published"


async def test_a_publish_that_raises_leaves_no_mark_and_the_retry_publishes() -> None:
    bus = InMemoryBus()
    calls: list[str] = []

    def deliver(ev: wa.WebhookEvent) -> None:
        calls.append(ev.workflow_id)
        if len(calls) == 1:
            raise RuntimeError("a bug while delivering")

    await bus.start(deliver)
    ev = event("wf-1", event_id="e-1")
    with pytest.raises(RuntimeError):
        bus.publish_once_now(ev, terminal=True, mark="published:id:e-1", mark_ttl=60.0)
    assert await bus.is_claimed("published:id:e-1") is False
    assert bus.publish_once_now(ev, terminal=True, mark="published:id:e-1", mark_ttl=60.0) == (
        "published"
    )
    assert calls == ["wf-1", "wf-1"]


async def test_an_event_nobody_waits_for_is_remembered_once_and_a_later_wait_finds_it() -> None:
    bus = InMemoryBus()
    w = waiting(bus)
    try:
        assert await w.publish(event("wf-1", event_id="e-1")) is True
        registry = w.registry
        # One record: the bus's. No early-buffer copy, no duplicate-filter or final entry, no
        # lost-webhook entry.
        assert len(registry._early) == 0 and len(registry._seen) == 0
        assert len(registry._final) == 0 and len(w.recorder.lost._seen) == 0
        assert len(bus._claims) == 1 and len(bus._terminal) == 1
        # The completion that came before its wait is not lost.
        done = await asyncio.wait_for(w.completion("wf-1", first_poll=3600), 5)
        assert done.channel is wa.Channel.WEBHOOK and done.workflow.status == "COMPLETED"
        assert registry.ended("wf-1") and w.recorder.webhook_seen("wf-1")
        assert not registry.ended("wf-2")
    finally:
        await w.close()


async def test_a_waiter_is_resolved_and_its_poll_entry_removed() -> None:
    bus = InMemoryBus()
    w = waiting(bus)
    try:
        task = asyncio.create_task(w.completion("wf-1", first_poll=3600))
        await asyncio.sleep(0.01)
        assert len(w.scheduler) == 1
        assert await w.publish(event("wf-1", "completed")) is True  # any case of a status
        done = await asyncio.wait_for(task, 5)
        assert done.channel is wa.Channel.WEBHOOK and done.event is not None
        assert len(w.scheduler) == 0 and len(w.registry) == 0
    finally:
        await w.close()


async def test_after_the_end_nothing_else_is_dispatched_on_the_vouched_path() -> None:
    bus = InMemoryBus()
    w = waiting(bus)
    seen: list[str] = []
    w.hooks.add(lambda e: seen.append(e.status))
    try:
        assert await w.publish(event("wf-1", "COMPLETED", "e-1"))
        assert await w.publish(event("wf-1", "FAILED", "e-2"))  # acknowledged...
        assert await w.publish(event("wf-1", "IN_PROGRESS", "e-3"))
        assert await w.publish(event("wf-1", "COMPLETED", "e-1"))  # a copy
        await w.hooks.drain()
        assert seen == ["COMPLETED"]  # ...but dispatched once
        assert w.registry.dispatched == 1 and w.registry.duplicates == 2
        [first] = bus.last_terminal_now(["wf-1"])
        assert first.status == "COMPLETED"
    finally:
        await w.close()


async def test_a_poll_after_the_webhook_does_not_count_it_lost() -> None:
    bus = InMemoryBus()
    w = waiting(bus)
    try:
        assert await w.publish(event("wf-1"))
        w.recorder.polled_terminal("wf-1")  # a poll found the end the webhook told before
        assert len(w.recorder.lost) == 0  # nothing awaited: the webhook came
    finally:
        await w.close()


def test_webhook_events_and_their_map_entries_are_not_tracked_by_the_gc() -> None:
    ev = wa.WebhookEvent(workflow_id="w", status="COMPLETED", raw=b"{}", trace_context="t")
    assert not gc.is_tracked(ev)
    remembered: TTLMap[wa.WebhookEvent] = TTLMap(60.0, 10, Clock())
    remembered.put("w", ev)
    gc.collect()
    assert not gc.is_tracked(remembered._data["w"])  # the tuple holds nothing trackable


def test_stale_queue_items_never_evict_and_never_pile_up() -> None:
    clock = Clock()
    ttl: TTLMap[int] = TTLMap(10.0, 100, clock)
    for i in range(10_000):  # the same few keys put again and again
        ttl.put(f"k{i % 5}", i)
    assert len(ttl) == 5 and len(ttl._queue) <= 2 * 5 + 64
    clock.now += 5
    ttl.put("k0", -1)  # replaced: its old item, first in the queue, expires first...
    clock.now += 6
    ttl.put("other", 0)
    assert ttl.get("k0") == -1  # ...and does not take the new entry with it
    assert ttl.get("k1") is None


def test_own_ttls_expire_in_the_heap_and_the_oldest_entry_goes_first() -> None:
    clock = Clock()
    ttl: TTLMap[str] = TTLMap(100.0, 3, clock)
    ttl.put("long", "a", ttl=1000.0)  # the oldest, with a longer ttl than the map's
    ttl.put("short", "b", ttl=1.0)
    ttl.put("plain", "c")
    clock.now += 2
    ttl.put("new", "d")  # the expired short one made room
    assert (ttl.get("long"), ttl.get("short"), ttl.get("new")) == ("a", None, "d")
    ttl.put("more", "e")  # full: the oldest goes, whatever its ttl
    assert ttl.get("long") is None and len(ttl) == 3


def test_statuses_of_any_case_are_terminal_and_upper_case_needs_no_folding() -> None:
    statuses = StatusSet()
    assert statuses.terminal == {"COMPLETED", *statuses.failure}
    assert statuses.is_terminal("COMPLETED") and statuses.is_terminal("completed")
    assert statuses.is_terminal("Failed") and not statuses.is_terminal("RUNNING")


async def test_an_event_the_bus_cannot_hold_is_kept_for_a_later_wait() -> None:
    bus = InMemoryBus(max_bytes=1000)  # the event alone is over the bus's byte budget
    w = waiting(bus)
    try:
        big = wa.WebhookEvent(workflow_id="wf-1", status="COMPLETED", raw=b"x" * 5000)
        assert await w.publish(big) is True
        assert bus.last_terminal_now(["wf-1"]) == []
        done = await asyncio.wait_for(w.completion("wf-1", first_poll=3600), 5)
        assert done.channel is wa.Channel.WEBHOOK and done.event is big
    finally:
        await w.close()


def test_the_stale_count_matches_the_queue_and_heap_through_every_way_out() -> None:
    clock = Clock()
    ttl: TTLMap[int] = TTLMap(10.0, 50, clock, max_bytes=50 * 300)
    for i in range(3000):
        key = f"k{i % 120}"
        if i % 7 == 0:
            ttl.put(key, i, ttl=3.0)  # its own ttl: the heap
        else:
            ttl.put(key, i)
        if i % 11 == 0:
            ttl.pop(f"k{(i * 7) % 120}")
        if i % 13 == 0:
            ttl.get(f"k{(i * 5) % 120}")
        clock.now += 0.05
        queued = len(ttl._queue) + len(ttl._heap)
        assert queued - len(ttl) == ttl._stale
        assert queued <= 2 * len(ttl) + 64 + 1
        assert len(ttl) <= 50
