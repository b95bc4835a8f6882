"""Benchmark 4: API calls per completed workflow, ``run_and_wait`` vs fixed-interval polling.

Workflows of 5, 60 and 600 simulated seconds run on Simulators (in a helper process) whose
clock is sped up by ``time_scale``; every interval on the client side is scaled by the same
factor (``scaled_policy``), so the counts are those of real time. Counted per workflow: the
run, its status polls and its result fetch (cases and tokens are set-up, not counted).

- ``run_and_wait``, webhooks healthy, in a cold session (these workflows are all it has);
- ``run_and_wait``, webhooks healthy, in a session that already receives webhooks (a trickle
  of short workflows runs alongside, as in steady production traffic);
- ``run_and_wait``, every webhook lost;
- a naive loop: sleep 1 s, poll, until terminal;
- a fixed-interval helper like openai-python's ``*_and_poll``: poll at once, then every 1 s
  (its default when the server sends no poll-interval hint).

Each ``run_and_wait`` configuration runs two batches of the same definition one after the
other: "new definition" (the Session has never seen it) and "seen definition" (the Session has
learned its durations from the first batch). Sped-up time magnifies real round trips and
event-loop delays (at ``time_scale`` 0.01 one real millisecond is 100 simulated ones): the
fixed-interval loops therefore sleep until absolute deadlines one simulated second apart, so an
iteration lasts one simulated second whatever the poll took, as against a real API where a
round trip is small next to a second; the library schedules its polls on absolute due times
too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _proc import Child
from _report import Mode, Row, Section, fmt, judge, median
from aiohttp import web

import workflows_async as wa
from workflows_async.testing import serve

__all__ = ["run", "scaled_policy"]

DURATIONS = (5, 60, 600)
TICK = 2.0  # simulated seconds of a background workflow in the warm sessions
TICK_EVERY = 10.0  # simulated seconds between two background workflows


def scaled_policy(scale: float) -> wa.PollPolicy:
    """The default PollPolicy with every duration multiplied (and the rate divided) by
    ``scale``: the same schedule in simulated seconds."""
    d = wa.PollPolicy()
    return wa.PollPolicy(
        initial_delay=d.initial_delay * scale,
        multiplier=d.multiplier,
        max_interval=d.max_interval * scale,
        jitter=d.jitter,
        rate=d.rate / scale,
        max_in_flight=d.max_in_flight,
        webhook_stretch=d.webhook_stretch,
        webhook_quiet_period=d.webhook_quiet_period * scale,
        rate_limit_pause=d.rate_limit_pause * scale,
    )


Flow = Callable[[wa.Session, str, str], Awaitable[str]]  # (session, case, definition) -> id


async def _library(session: wa.Session, case: str, definition: str) -> str:
    outcome = await session.run_and_wait(case, definition, timeout=600)
    return outcome.workflow.id


def _fixed_interval(interval: float, *, poll_first: bool) -> Flow:
    async def flow(session: wa.Session, case: str, definition: str) -> str:
        workflow = await session.run_workflow(case, definition)
        # Each iteration ends on the next whole interval after the start (an absolute
        # deadline): the real time a poll and the event loop take does not stretch it.
        due = time.perf_counter()
        while not session.statuses.is_terminal(workflow.status):
            if not poll_first:
                due += interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            workflow = await session.get_workflow(workflow.id)
            if poll_first and not session.statuses.is_terminal(workflow.status):
                due += interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await session.get_result(workflow.id)
        return workflow.id

    return flow


async def _batch(
    session: wa.Session, flow: Flow, definition: str, count: int
) -> list[tuple[str, float]]:
    """Run ``count`` workflows at once: (workflow id, seconds until the caller had it)."""
    cases = [(await session.create_case()).id for _ in range(count)]

    async def timed(case: str) -> tuple[str, float]:
        started = time.perf_counter()
        workflow_id = await flow(session, case, definition)
        return workflow_id, time.perf_counter() - started

    return list(await asyncio.gather(*(timed(case) for case in cases)))


async def _trickle(session: wa.Session, scale: float, first: asyncio.Event) -> None:
    """Background workflows, one every TICK_EVERY simulated seconds (the warm sessions)."""

    async def tick() -> None:
        await _batch(session, _library, "tick", 1)
        first.set()

    running: set[asyncio.Task[None]] = set()
    try:
        while True:
            task = asyncio.create_task(tick())
            running.add(task)
            task.add_done_callback(running.discard)
            await asyncio.sleep(TICK_EVERY * scale)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


KINDS = {
    "cold": "webhooks healthy, cold session",
    "warm": "webhooks healthy, busy session",
    "lost": "all webhooks lost",
    "naive": "naive loop: sleep 1 s, poll",
    "helper": "fixed-interval helper (*_and_poll style)",
}
LIBRARY = ("cold", "warm", "lost")
BATCHES = {"new": "new definition", "seen": "seen definition"}
HEALTHY_GOAL = 4.0  # calls per 600 s workflow of a seen definition, webhooks healthy
LOST_GOAL = 15.0  # calls per 600 s workflow of a seen definition, every webhook lost
NOTICED_GOAL = 60.0  # simulated seconds from completion to result fetch (median), same case


def _sim_of(kind: str, duration: int) -> str:
    return f"{kind}-{duration}" if kind in ("cold", "warm") else "lost"


Done = dict[tuple[str, int, str], list[tuple[str, float]]]  # (kind, duration, batch) -> runs


def _calls(stats: dict[str, Any], done: Done, key: tuple[str, int, str]) -> list[float]:
    """API calls of each workflow: its run, its polls and its result fetches."""
    sim = stats[_sim_of(key[0], key[1])]
    return [1.0 + sim["polls"].get(wid, 0) + sim["results"].get(wid, 0) for wid, _ in done[key]]


async def _two_batches(
    session: wa.Session, definition: str, count: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """A batch of a definition the session never saw, then one of the same definition."""
    first = await _batch(session, _library, definition, count)
    return first, await _batch(session, _library, definition, count)


def _spread(values: list[float]) -> str:
    return f"min-max {fmt(min(values))}-{fmt(max(values))}" if values else ""


async def run(mode: Mode) -> Section:
    section = Section(4, "API economy: calls per completed workflow")
    scale = mode.economy_scale
    definitions = {f"eco-{d}": float(d) for d in DURATIONS} | {"tick": TICK}
    names = [f"{kind}-{d}" for kind in ("cold", "warm") for d in DURATIONS] + ["lost"]
    spec = {
        name: {
            "time_scale": scale,
            "definitions": definitions,
            "drop_webhooks": 1.0 if name == "lost" else 0.0,
        }
        for name in names
    }
    async with await Child.start("sims", {"sims": spec}) as host:
        sims = host.info["sims"]

        def session_for(name: str) -> wa.Session:
            sim = sims[name]
            auth = wa.KeySecretAuth(sim["key"], sim["secret"])
            return wa.Session(
                sim["base_url"], auth, allow_insecure_http=True, poll=scaled_policy(scale)
            )

        sessions = {name: session_for(name) for name in names}
        plain = session_for("lost")  # the fixed-interval loops
        app = web.Application()
        for name in names[:-1]:
            app.add_subapp(f"/{name}", sessions[name].webhook_app())
        async with serve(app) as served:  # port 0; then the Simulators learn the URLs
            urls = {name: f"{served.url}/{name}/" for name in names if name != "lost"}
            await host.ask("webhooks", urls=urls)
            trickles: list[asyncio.Task[None]] = []
            try:
                warmed = []
                for d in DURATIONS:
                    first = asyncio.Event()
                    trickles.append(
                        asyncio.create_task(_trickle(sessions[f"warm-{d}"], scale, first))
                    )
                    warmed.append(first.wait())
                async with asyncio.timeout(60):
                    await asyncio.gather(*warmed)  # each warm session has had a webhook
                naive = _fixed_interval(1.0 * scale, poll_first=False)
                helper = _fixed_interval(1.0 * scale, poll_first=True)
                jobs: dict[tuple[str, int], Any] = {}
                for d in DURATIONS:
                    definition = f"eco-{d}"
                    for kind in LIBRARY:
                        session = sessions[_sim_of(kind, d)]
                        jobs[kind, d] = _two_batches(session, definition, mode.economy_workflows)
                    jobs["naive", d] = _batch(plain, naive, definition, mode.economy_naive)
                    jobs["helper", d] = _batch(plain, helper, definition, mode.economy_naive)
                answers = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
                done: Done = {}
                for (kind, d), answer in answers.items():
                    if kind in LIBRARY:
                        done[kind, d, "new"], done[kind, d, "seen"] = answer
                    else:
                        done[kind, d, ""] = answer
                stats = await host.ask("stats")
            finally:
                for task in trickles:
                    task.cancel()
                await asyncio.gather(*trickles, return_exceptions=True)
                for session in [*sessions.values(), plain]:
                    await session.close()

    for d in DURATIONS:
        naive_calls = median(_calls(stats, done, ("naive", d, "")))
        keys = [(k, d, b) for k in LIBRARY for b in BATCHES] + [("naive", d, ""), ("helper", d, "")]
        for key in keys:
            kind, _, batch = key
            calls = _calls(stats, done, key)
            value = sum(calls) / len(calls)
            delays = stats[_sim_of(kind, d)]["delays"]
            noticed = [delays[wid] / scale for wid, _ in done[key]]
            late = median(noticed)
            label = f"{BATCHES[batch]}, {KINDS[kind]}" if batch else KINDS[kind]
            goal, verdict = "", None
            if d == max(DURATIONS) and batch == "seen" and kind in ("cold", "warm"):
                goal, verdict = f"<= {HEALTHY_GOAL:g}", judge(calls, HEALTHY_GOAL)
            elif d == max(DURATIONS) and batch == "seen" and kind == "lost":
                goal = f"<= {LOST_GOAL:g}, noticed <= {NOTICED_GOAL:g} s"
                calls_ok, late_ok = judge(calls, LOST_GOAL), judge(noticed, NOTICED_GOAL)
                verdict = calls_ok if calls_ok != "met" else late_ok
            is_naive = kind == "naive"
            section.rows.append(
                Row(f"calls/workflow, {d} s: {label}", value, "",
                    "" if is_naive else "naive loop", None if is_naive else naive_calls,
                    goal, None if verdict is None else verdict == "met",
                    f"{_spread(calls)}; result fetched {late:.1f} s after completion (median)",
                    verdict=verdict)
            )  # fmt: skip
    section.notes.append(
        f"time_scale {scale}: {max(DURATIONS)} simulated s run in {max(DURATIONS) * scale:.2g} s;"
        f" {mode.economy_workflows} workflows per library row, {mode.economy_naive} per loop row;"
        " default PollPolicy, every duration scaled. Seconds are simulated: real milliseconds of"
        f" HTTP round trips count {1 / scale:.0f} times over in them, so the loops sleep until"
        " absolute deadlines a simulated second apart. Goals judge every workflow of the row:"
        " 'met' when all are within, 'missed' when none is, else 'inconclusive'."
    )
    return section
