"""Retained memory per accepted terminal webhook (nobody waits): ``WaitEngine.publish`` over the
in-process bus, 100,000 distinct events (dedupe marks, the remembered terminal event, the
terminal-is-final and lost-webhook records), after ``gc.collect()``: bytes (tracemalloc), extra
GC-tracked objects per event and the time of a full collection then. Standalone:
``.venv/bin/python benchmarks/_retain.py``."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

import workflows_async as wa
from workflows_async.bus import InMemoryBus
from workflows_async.engine import WaitEngine
from workflows_async.statuses import StatusSet

N = 100_000


async def never(wid: str) -> wa.Workflow:
    raise AssertionError(wid)


async def main() -> None:
    w = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=InMemoryBus(), poll=never)
    await w.start()
    raw = b'{"workflowId":"x","status":"COMPLETED"}'
    evs = [
        wa.WebhookEvent(
            workflow_id=f"{i:08d}-aaaa-bbbb-cccc-dddddddddddd",
            status="COMPLETED",
            event_id=f"{i:08d}-eeee-ffff-0000-111111111111",
            raw=raw,
        )
        for i in range(N)
    ]
    gc.collect()
    objs0 = len(gc.get_objects())
    tracemalloc.start()
    s0 = tracemalloc.take_snapshot()
    for ev in evs:
        await w.publish(ev)
    gc.collect()
    s1 = tracemalloc.take_snapshot()
    objs1 = len(gc.get_objects())
    total = sum(s.size_diff for s in s1.compare_to(s0, "filename"))
    t = time.perf_counter()
    gc.collect()
    full = time.perf_counter() - t
    print(
        f"retained {total / N:,.0f} B/event, GC-tracked objects {(objs1 - objs0) / N:.2f}"
        f"/event, full collection {full * 1000:.0f} ms"
    )
    await w.close()


if __name__ == "__main__":
    asyncio.run(main())
