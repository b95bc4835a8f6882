"""The in-process bus keeps its published window at scale: short "pending" claims expire and free
their slots wherever they sit, and 100,000 published marks all stay for the replay window."""

from __future__ import annotations

import asyncio

import workflows_async as wa
from workflows_async._ttl import TTLMap
from workflows_async.bus import InMemoryBus
from workflows_async.engine import WaitEngine
from workflows_async.events import REPLAY_WINDOW
from workflows_async.statuses import StatusSet

N = 100_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_100k_events_keep_every_published_mark_and_drop_every_pending_claim() -> None:
    clock = Clock()
    claims: TTLMap[bool] = TTLMap(REPLAY_WINDOW, 1_000_000, clock, max_bytes=64 << 20)
    for i in range(N):
        assert claims.add(f"event:{i}", True, ttl=10.0)  # the pending claim, never given back
        claims.put(f"published:{i}", True)
        clock.now += 0.001  # 1,000 events a second
    clock.now += 11  # every pending claim has expired
    claims.put("published:last", True)  # any write purges what expired
    assert len(claims) == N + 1
    assert all(claims.get(f"published:{i}") for i in range(0, N, 997))
    assert claims.get("event:0") is None and claims.get(f"event:{N - 1}") is None
    clock.now += REPLAY_WINDOW  # the window is over: the marks go too
    claims.put("next", True)
    assert len(claims) == 1


async def test_100k_events_through_the_engine_keep_the_window() -> None:
    clock = Clock()
    bus = InMemoryBus(clock=clock)

    async def never(workflow_id: str) -> wa.Workflow:
        raise AssertionError("no poll expected")

    waiting = WaitEngine(
        statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never, clock=clock
    )
    try:
        async with asyncio.timeout(120):
            for i in range(N):
                ev = wa.WebhookEvent(workflow_id=f"wf-{i}", status="IN_PROGRESS", event_id=f"e{i}")
                assert await waiting.publish(ev) is True
                clock.now += 0.001
            clock.now += 3600.0  # an hour later, well inside the window
            assert len(bus._claims) == N  # one mark per event, nothing pending left
            first = wa.WebhookEvent(workflow_id="wf-0", status="IN_PROGRESS", event_id="e0")
            assert (
                await bus.publish_once(
                    first,
                    terminal=False,
                    mark=f"published:{first.dedup_key}",
                    mark_ttl=REPLAY_WINDOW,
                )
                == "duplicate"
            )  # the first event's mark is still there
    finally:
        await waiting.close()
