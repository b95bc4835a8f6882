"""Benchmark 5: many ``run_and_wait`` calls at once against the Simulator, 10% of webhooks lost.

The Simulator runs in a helper process; this process holds the Session and its webhook
sub-app, mounted and served as in ``tests/stack.py``. Workflows last 5 to 60 simulated seconds
(``time_scale`` makes that real seconds), so the ideal wall time is the slowest duration. The
dropped webhooks' workflows can only finish by polling: nothing may be lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from _economy import scaled_policy
from _memory import library_tasks
from _proc import Child
from _report import Mode, Row, Section, percentile
from aiohttp import web

import workflows_async as wa
from workflows_async.testing import serve

__all__ = ["run"]

DURATIONS = (5, 10, 20, 30, 60)  # simulated seconds, used in turn
DROP = 0.1


async def _one(session: wa.Session, case: str, duration: int) -> wa.WorkflowOutcome:
    """The caller's own task (so it is not counted as one of the library's)."""
    return await session.run_and_wait(case, f"e2e-{duration}", timeout=300)


async def run(mode: Mode) -> Section:
    n, scale = mode.e2e_runs, mode.e2e_scale
    section = Section(5, f"end to end: {n:,} run_and_wait at once, {DROP:.0%} of webhooks dropped")
    spec = {
        "time_scale": scale,
        "definitions": {f"e2e-{d}": float(d) for d in DURATIONS},
        "drop_webhooks": DROP,
    }
    async with await Child.start("sims", {"sims": {"e2e": spec}}) as host:
        sim = host.info["sims"]["e2e"]
        session = wa.Session(
            sim["base_url"],
            wa.KeySecretAuth(sim["key"], sim["secret"]),
            allow_insecure_http=True,
            poll=scaled_policy(scale),
        )
        app = web.Application()
        app.add_subapp("/webhooks", session.webhook_app())
        async with serve(app) as served:  # port 0; then the Simulator learns the URL
            await host.ask("webhooks", urls={"e2e": f"{served.url}/webhooks/"})
            try:
                slots = asyncio.Semaphore(50)

                async def new_case() -> str:
                    async with slots:
                        return (await session.create_case()).id

                cases = await asyncio.gather(*(new_case() for _ in range(n)))
                await session.start()  # the scheduler, as the first wait would start it
                tasks_idle, peak = library_tasks(), [0]

                async def sample() -> None:
                    while True:
                        peak[0] = max(peak[0], library_tasks())
                        await asyncio.sleep(0.02)

                sampler = asyncio.create_task(sample())
                sim_cpu = await host.cpu()
                cpu, wall = time.process_time(), time.perf_counter()
                outcomes = await asyncio.gather(
                    *(
                        _one(session, case, DURATIONS[i % len(DURATIONS)])
                        for i, case in enumerate(cases)
                    ),
                    return_exceptions=True,
                )
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                sampler.cancel()
                sim_cpu = await host.cpu() - sim_cpu
                stats = (await host.ask("stats"))["e2e"]
                left_pending, tasks_after = len(session.pending()), library_tasks()
            finally:
                await session.close()

    finished = [o for o in outcomes if isinstance(o, wa.WorkflowOutcome)]
    completed = [o for o in finished if o.workflow.status == "COMPLETED" and o.result is not None]
    errors = Counter(type(o).__name__ for o in outcomes if not isinstance(o, wa.WorkflowOutcome))
    channels = Counter(o.channel.value for o in finished)
    routes = stats["routes"]
    calls = sum(routes.get(r, 0) for r in ("POST /workflows/run", "GET /workflows/{id}",
                                             "GET /workflows/{id}/result"))  # fmt: skip
    ideal = max(DURATIONS) * scale
    by_poll = sorted(o.elapsed for o in finished if o.channel is wa.Channel.POLL)
    lost = n - len(completed)
    bound = 2 + wa.PollPolicy().max_in_flight  # scheduler + one key fetch + polls in flight
    section.rows += [
        Row("wall time", wall, "s", "ideal (slowest workflow)", ideal,
            note=f"{n / wall:,.0f} workflows/s"),
        Row("client CPU (Session + receiver)", cpu, "s", "Simulator CPU", sim_cpu,
            note=f"{cpu / n * 1e3:.2f} ms per workflow; CPU {cpu / wall:.0%} of wall time"),
        Row("completions lost", lost, "", goal="0", met=lost == 0,
            note=f"errors: {dict(errors) or 'none'}; still pending after: {left_pending}"),
        Row("finished by polling", channels.get("poll", 0), "",
            "webhooks dropped", stats["webhooks_dropped"],
            note=f"by webhook {channels['webhook']}, by the run's answer {channels['run']}"),
        Row("API calls per workflow (run + polls + result)", calls / n, "",
            "run + result", 2.0),
        Row("slowest wait that finished by polling", by_poll[-1] if by_poll else 0.0, "s",
            "ideal", ideal, note=f"p50 of those {percentile(by_poll, 0.5):.2f} s"),
        Row("library asyncio tasks, most at any time", peak[0], "", "idle", tasks_idle,
            f"<= 2 + max_in_flight ({bound}), whatever N", peak[0] <= bound,
            note=f"after the run: {tasks_after}"),
    ]  # fmt: skip
    section.notes.append(
        f"time_scale {scale}: workflows of {', '.join(map(str, DURATIONS))} simulated s, in turn;"
        " default PollPolicy, every duration scaled; cases created beforehand (not timed)."
    )
    return section
