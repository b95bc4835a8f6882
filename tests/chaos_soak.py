"""The chaos soak: N concurrent ``run_and_wait`` against a Simulator that does everything a
production deployment meets at once, and the figures that show whether anything was lost.

Used by ``tests/test_soak.py`` (small scale) and ``benchmarks/soak.py`` (full scale). It lives
here, next to ``stack.py``, because the test suite is its first user and tests never import from
``benchmarks/`` (they run those scripts as subprocesses); the script puts this folder on its path.

Invariants: one global deadline bounds everything (calls still running then are cancelled and
counted, closing is bounded too), so a soak never hangs; every verdict comes from the
Simulator's own state (which workflows exist, for which case, final or not) or from asyncio,
never from what the library says about itself; one ``seed`` makes the same choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from stack import receiver

import workflows_async as wa
from workflows_async.testing import Faults, Simulator, WorkflowDefinition, generate_signing_key

__all__ = ["Scenario", "SoakReport", "soak"]

RUN_ROUTE = "POST /workflows/run"
_GIVING_UP = (wa.ServerError, wa.RateLimitError, wa.TransportError, wa.OutcomeUnknownError)
KEY_ROUTE = "GET /auth/webhooks/key/{kid}"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """What goes wrong, and how much. Seconds are real seconds unless said otherwise."""

    n: int = 60
    seed: int = 1
    time_scale: float = 0.01
    durations: tuple[float, ...] = (10.0, 50.0, 150.0)
    """Simulated seconds of the soak's definitions (x time_scale: 0.1 s to 1.5 s); every tenth
    run uses ``kyc-instant`` (final in the run response) instead."""
    drop_webhooks: float = 0.2
    duplicate_webhooks: float = 1.0
    webhook_before_response: bool = True
    run_response_delay: float = 0.3
    """Longer than the shortest workflow: its final webhook overtakes the run response."""
    error_rate: float = 0.05
    get_error_statuses: tuple[int, ...] = (429, 500, 502, 503)
    post_error_statuses: tuple[int, ...] = (429, 503)
    """Before effect: the API did nothing."""
    retry_after: float = 0.2
    token_ttl: float = 3.0
    revoke_tokens_every: float = 0.0
    """Mean real seconds between revocations of every token, at random times (0: never)."""
    rotate_key: bool = False
    """Rotate the signing key once half the runs were sent."""
    key_publish_delay: float = 1.0
    webhook_retry_interval: float = 0.5
    """Real seconds between the platform's delivery attempts (the real platform: 5 s). The
    rotation needs a realistic value: the receiver re-checks a kid not served yet after 3 s."""
    after_effect_rate: float = 0.0
    """Share of runs whose ``POST /workflows/run`` takes effect and is answered 503: counted
    apart (an OutcomeUnknownError is then the documented answer)."""
    poll: wa.PollPolicy = dataclasses.field(
        default_factory=lambda: wa.PollPolicy(
            initial_delay=0.3, max_interval=1.0, rate=400, max_in_flight=100
        )
    )
    wait_timeout: float = 60.0
    """``run_and_wait(timeout=...)``."""
    deadline: float = 120.0
    """The whole soak, setup and teardown included."""

    @classmethod
    def full(cls, **changes: Any) -> Scenario:
        """Everything at once: the base chaos plus revoked tokens and a mid-run key rotation."""
        full = cls(revoke_tokens_every=3.0, rotate_key=True, webhook_retry_interval=5.0)
        return dataclasses.replace(full, **changes)


@dataclasses.dataclass
class SoakReport:
    scenario: Scenario
    runs: int = 0
    completed: int = 0
    lost: int = 0
    """No outcome, although the Simulator shows the case's workflow finished."""
    failed_wrongly: int = 0
    """An exception from a call whose workflow finished, or one that is no WorkflowsError."""
    unknown_documented: int = 0
    """OutcomeUnknownError under after-effect faults (the documented answer)."""
    gave_up: int = 0
    """The API kept refusing (5xx, 429, transport, outcome unknown) a call whose run never took
    effect (no workflow for its case); any other error there (a 401: the credentials are good)
    counts as failed wrongly."""
    cut_by_deadline: int = 0
    duplicates: int = 0
    """Cases with more than one workflow."""
    leaked_tasks: int = 0
    leaked_names: list[str] = dataclasses.field(default_factory=list)
    close_failed: str = ""
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    workflows: int = 0
    api_calls: int = 0
    calls_by_route: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    channels: Counter[str] = dataclasses.field(default_factory=Counter)
    revocations: int = 0
    rotated: bool = False
    webhooks_sent: int = 0
    webhooks_delivered: int = 0
    webhook_refusals: Counter[str] = dataclasses.field(default_factory=Counter)
    webhooks_refused_to_the_end: int = 0
    """Validly signed event copies the receiver never acknowledged (the platform gave up)."""
    case_retries: int = 0
    """``create_case`` calls that raised (the soak tries again: setup is not under test)."""
    case_failed_wrongly: int = 0
    """Of those, the ones that raised something other than the documented answer to an injected
    fault (a 5xx or 429 on ``POST /cases`` is an ``OutcomeUnknownError`` or a ``RateLimitError``
    by design: the POST is not resent); e.g. a 401 although the credentials are valid."""
    case_errors: Counter[str] = dataclasses.field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def calls_per_workflow(self) -> float:
        return self.api_calls / self.workflows if self.workflows else 0.0

    def targets_missed(self) -> list[str]:
        """The targets not met: 0 lost, 0 wrong failures, 0 case creations failed wrongly,
        0 duplicates, 0 leaked tasks, and no validly signed webhook refused on every attempt."""
        missed = [
            f"{name}={value}"
            for name, value in (
                ("lost", self.lost),
                ("failed_wrongly", self.failed_wrongly),
                ("case_creations_failed_wrongly", self.case_failed_wrongly),
                ("duplicates", self.duplicates),
                ("leaked_tasks", self.leaked_tasks),
                ("webhooks_refused_to_the_end", self.webhooks_refused_to_the_end),
            )
            if value
        ]
        if self.close_failed:
            missed.append(f"close_failed={self.close_failed}")
        return missed

    def table(self) -> str:
        target = "target 0"
        rows = [
            ("runs (run_and_wait calls)", f"{self.runs:,}", ""),
            ("completed (outcome returned)", f"{self.completed:,}", ""),
            ("completions lost", f"{self.lost:,}", target),
            ("calls failed wrongly", f"{self.failed_wrongly:,}", target),
            ("create_case calls failed (retried by the soak)", f"{self.case_retries:,}", ""),
            ("  of which failed wrongly", f"{self.case_failed_wrongly:,}", target),
            ("duplicate workflows (cases with > 1)", f"{self.duplicates:,}", target),
            ("leaked tasks after close", f"{self.leaked_tasks:,}", target),
            (
                "signed webhooks refused to the end",
                f"{self.webhooks_refused_to_the_end:,}",
                target,
            ),
            ("outcome unknown (documented, after-effect)", f"{self.unknown_documented:,}", ""),
            ("gave up before effect (no workflow)", f"{self.gave_up:,}", ""),
            ("cut by the global deadline", f"{self.cut_by_deadline:,}", ""),
            ("RSS before -> after", f"{self.rss_before_mb:.0f} -> {self.rss_after_mb:.0f} MB", ""),
            ("API calls per workflow", f"{self.calls_per_workflow:.2f}", ""),
            ("workflows in the Simulator", f"{self.workflows:,}", ""),
            ("token revocations / key rotated", f"{self.revocations} / {self.rotated}", ""),
            (
                "webhooks sent / delivered",
                f"{self.webhooks_sent:,} / {self.webhooks_delivered:,}",
                "",
            ),
            ("elapsed", f"{self.elapsed:.1f} s", ""),
        ]
        width = max(len(row[0]) for row in rows)
        lines = [f"| {'figure':<{width}} | value | goal |", f"|{'-' * (width + 2)}|---|---|"]
        lines += [f"| {name:<{width}} | {value} | {goal} |" for name, value, goal in rows]
        details = {
            "finished by": dict(self.channels.most_common()),
            "errors raised": dict(self.errors.most_common(8)),
            "webhook refusals": dict(self.webhook_refusals.most_common()),
            "calls by route": self.calls_by_route,
            "case creation errors (retried by the soak)": dict(self.case_errors.most_common()),
        }
        lines += [f"{name}: {value}" for name, value in details.items()]
        if self.leaked_names:
            lines.append(f"leaked: {self.leaked_names[:5]}")
        if self.close_failed:
            lines.append(f"close failed: {self.close_failed}")
        return "\n".join(lines)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _faults(s: Scenario) -> Faults:
    return Faults(
        drop_webhooks=s.drop_webhooks,
        duplicate_webhooks=s.duplicate_webhooks,
        webhook_before_response=s.webhook_before_response,
        run_response_delay=s.run_response_delay,
        error_rate=s.error_rate,
        error_statuses=s.get_error_statuses,
        post_error_statuses=s.post_error_statuses,
        retry_after=s.retry_after,
        revoke_tokens_every=s.revoke_tokens_every,
        key_publish_delay=s.key_publish_delay,
    )


def _definitions(s: Scenario) -> dict[str, WorkflowDefinition]:
    return {f"soak-{d:g}": WorkflowDefinition(("IN_PROGRESS", "COMPLETED"), d) for d in s.durations}


def _definition_for(index: int, names: list[str]) -> str:
    return "kyc-instant" if index % 10 == 9 else names[index % len(names)]


async def _new_case(session: wa.Session, report: SoakReport, slots: asyncio.Semaphore) -> str:
    """A case for one run; setup is not under test, so a refused creation is tried again."""
    async with slots:
        for attempt in range(20):
            try:
                return (await session.create_case(first_name="Soak")).id
            except wa.WorkflowsError as error:
                report.case_retries += 1
                report.case_errors[_kind(error)] += 1
                if not isinstance(error, _GIVING_UP):
                    report.case_failed_wrongly += 1
                await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
        return (await session.create_case(first_name="Soak")).id


async def _rotate_midway(sim: Simulator, n: int, key: Any, report: SoakReport) -> None:
    while sim.calls_by_route[RUN_ROUTE] < max(1, n // 2):
        await asyncio.sleep(0.02)
    sim.rotate_key(key)
    report.rotated = True


def _tasks_but(baseline: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t not in baseline and not t.done()]


def _name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or repr(coro)


@contextlib.contextmanager
def _bounded(report: SoakReport, what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # teardown must go on; the report says what failed
        report.close_failed += f"{what}: {type(exc).__name__}; "


async def soak(scenario: Scenario) -> SoakReport:
    """Run the soak in the running event loop (best a fresh one: tasks are counted)."""
    s, report = scenario, SoakReport(scenario)
    started = time.monotonic()
    end = started + s.deadline
    baseline = set(asyncio.all_tasks())
    gc.collect()
    report.rss_before_mb = _rss_mb()
    rng = random.Random(s.seed)
    spare_key = generate_signing_key()  # made now: a 2048-bit key blocks the loop a while
    sim = Simulator(
        time_scale=s.time_scale,
        seed=s.seed,
        faults=Faults(),
        definitions=_definitions(s),
        token_ttl=s.token_ttl,
        webhook_retry_interval=s.webhook_retry_interval / s.time_scale,
        webhook_timeout=10.0 / s.time_scale,
    )
    await sim.start()
    session = wa.Session(
        sim.base_url,
        wa.KeySecretAuth(sim.key, sim.secret),
        allow_insecure_http=True,
        poll=s.poll,
        timeout=10.0,
    )
    rotation: asyncio.Task[None] | None = None
    try:
        async with receiver(session) as url:
            sim.add_webhook_url(url)
            await session.start()
            sim.faults = _faults(s)
            names = sorted(_definitions(s))
            slots = asyncio.Semaphore(50)
            try:
                async with asyncio.timeout(max(0.0, end - time.monotonic())):
                    cases = await asyncio.gather(
                        *(_new_case(session, report, slots) for _ in range(s.n))
                    )
            except (TimeoutError, wa.WorkflowsError) as exc:
                report.close_failed += f"case setup: {type(exc).__name__}; "
                cases = []
            if s.rotate_key:
                rotation = asyncio.create_task(_rotate_midway(sim, len(cases), spare_key, report))
            launched = time.monotonic()
            calls: dict[str, asyncio.Task[wa.WorkflowOutcome]] = {}
            for index, case_id in enumerate(cases):
                if rng.random() < s.after_effect_rate:
                    sim.fail_next("POST", "/workflows/run", status=503, after_effect=True)
                calls[case_id] = asyncio.create_task(
                    session.run_and_wait(
                        case_id, _definition_for(index, names), timeout=s.wait_timeout
                    )
                )
            report.runs = len(calls)
            if calls:
                _, pending = await asyncio.wait(
                    calls.values(), timeout=max(0.1, end - 15.0 - time.monotonic())
                )
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=5.0)
            report.elapsed = time.monotonic() - launched
            sim.faults.reset()
            with _bounded(report, "simulator idle"):
                await sim.wait_idle(timeout=max(0.5, min(10.0, end - 5.0 - time.monotonic())))
            _judge(report, sim, calls)
            with _bounded(report, "session close"):
                await asyncio.wait_for(session.close(), timeout=10.0)
    finally:
        if rotation is not None:
            rotation.cancel()
            await asyncio.wait({rotation}, timeout=1.0)
        with _bounded(report, "session close (2)"):
            await asyncio.wait_for(session.close(), timeout=5.0)
        with _bounded(report, "simulator close"):
            await asyncio.wait_for(sim.close(), timeout=10.0)
    leftover = _tasks_but(baseline)
    for _ in range(40):  # aiohttp's connection handlers end a moment after their transports
        if not leftover:
            break
        await asyncio.sleep(0.05)
        leftover = _tasks_but(baseline)
    report.leaked_tasks = len(leftover)
    report.leaked_names = sorted(_name(task) for task in leftover)
    gc.collect()
    report.rss_after_mb = _rss_mb()
    return report


def _judge(
    report: SoakReport, sim: Simulator, calls: dict[str, asyncio.Task[wa.WorkflowOutcome]]
) -> None:
    """Every call against the Simulator's state; see `SoakReport` for the definitions."""
    by_case: dict[str, list[Any]] = {}
    for info in sim.workflows.values():
        by_case.setdefault(info.case_id, []).append(info)
    report.workflows = sum(len(runs) for runs in by_case.values())
    report.duplicates = sum(1 for runs in by_case.values() if len(runs) > 1)
    for case_id, task in calls.items():
        runs = by_case.get(case_id, [])
        finished = any(info.final for info in runs)
        if task.cancelled() or not task.done():
            report.cut_by_deadline += 1
            report.errors["cut by deadline"] += 1
            report.lost += finished
            continue
        error = task.exception()
        if error is None:
            outcome = task.result()
            mine = any(info.id == outcome.workflow.id and info.final for info in runs)
            report.completed += mine
            report.failed_wrongly += not mine  # an outcome for a workflow not of this case
            report.channels[str(outcome.channel)] += 1
            continue
        report.errors[_kind(error)] += 1
        if isinstance(error, wa.OutcomeUnknownError) and report.scenario.after_effect_rate > 0:
            report.unknown_documented += 1
        elif finished:
            report.lost += 1
            report.failed_wrongly += 1
        elif isinstance(error, _GIVING_UP):
            report.gave_up += 1
        else:
            report.failed_wrongly += 1
    routes = dict(sim.calls_by_route)
    report.calls_by_route = dict(sorted(routes.items()))
    report.api_calls = sum(count for route, count in routes.items() if route != KEY_ROUTE)
    report.revocations = sim.token_revocations
    report.webhooks_sent, report.webhooks_delivered = sim.webhooks_sent, sim.webhooks_delivered
    acknowledged: dict[tuple[str, str, bool], bool] = {}
    for attempt in sim.webhook_attempts:
        if attempt.outcome == "dropped" or attempt.signature != "valid":
            continue
        key = (attempt.event_id, attempt.url, attempt.duplicate)
        acknowledged[key] = acknowledged.get(key, False) or attempt.ok
        if not attempt.ok:
            report.webhook_refusals[str(attempt.outcome)] += 1
    report.webhooks_refused_to_the_end = sum(not ok for ok in acknowledged.values())


def _kind(error: BaseException) -> str:
    status = getattr(error, "status", None)
    return f"{type(error).__name__}({status})" if status else type(error).__name__
