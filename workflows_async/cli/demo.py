"""``workflows-async demo``: a batch of workflows against an in-process Simulator: the case flow
(``POST /workflows/run``, API version 1), then the execution flow (``POST /workflows`` for a
record), both with an organization token.

Invariants: everything listens on 127.0.0.1 and is closed before the command returns; each row
shows the channel that actually finished its workflow, as ``run_and_wait`` reported it (the
demo arranges conditions, it never labels a row itself); no personal data is used or shown.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from .._serve import serve
from ..errors import WorkflowsError
from ..statuses import DEFAULT_STATUSES
from .common import EXIT_ERROR, EXIT_OK, CliParser, UsageError, count

if TYPE_CHECKING:  # imported where used, so that parsing the command line stays cheap
    from ..events import WebhookEvent
    from ..models import WorkflowOutcome, WorkflowResult
    from ..polling import PollPolicy
    from ..session import Session

REVIEW = "kyc-review"
"""A demo-only definition that finishes late, after the Simulator starts dropping webhooks."""

TIME_SCALE = 0.1  # simulated seconds -> wall seconds: kyc-basic takes 50 ms
WAIT_TIMEOUT = 10.0
COLUMNS = ("workflow", "definition", "status", "channel", "time (s)")


@dataclasses.dataclass(slots=True)
class DemoRow:
    index: int
    definition: str
    workflow_id: str = ""
    status: str = ""
    channel: str = ""
    elapsed: float = 0.0
    error: str | None = None


@dataclasses.dataclass(slots=True)
class DemoReport:
    rows: list[DemoRow]
    wall_time: float
    api_calls: int
    polls: int
    webhooks_received: int
    executions: list[DemoRow] = dataclasses.field(default_factory=list)

    @property
    def all_terminal(self) -> bool:
        return all(row.error is None for row in [*self.rows, *self.executions])


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser: CliParser = commands.add_parser(
        "demo",
        parents=[parent],
        help="run a batch of workflows against the built-in Simulator (no network needed)",
        description=(
            "Start the Simulator and a webhook receiver on 127.0.0.1, then run --count "
            "workflows at once with run_and_wait. Most finish by webhook; then the Simulator "
            "starts dropping every webhook, and the late ones finish by polling; kyc-instant "
            "is final in the run response itself; kyc-failing ends FAILED."
        ),
    )
    parser.add_argument(
        "--count", type=count, default=12, metavar="N",
        help="workflows to run (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=7, help="Simulator seed (default: 7)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= 1000:
        raise UsageError("--count must be between 1 and 1000")
    report = asyncio.run(run_demo(args.count, seed=args.seed))
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        print(format_report(report))
    return EXIT_OK if report.all_terminal else EXIT_ERROR


def poll_policy() -> PollPolicy:
    """Quick, steady polls: the late workflows finish by poll soon after the drops begin.
    (Made when the demo runs: the polling module is not needed to parse a command line.)"""
    from ..polling import PollPolicy

    return PollPolicy(
        initial_delay=0.25, multiplier=1.0, max_interval=0.25, jitter=0.2, rate=50.0,
        max_in_flight=20, webhook_stretch=1.0,
    )  # fmt: skip


def plan(total: int) -> list[str]:
    """The definition of each workflow: mostly webhook-finished, every fourth a late one."""
    instant = max(3, total // 2)
    definitions = []
    for i in range(total):
        if i == 2:
            definitions.append("kyc-failing")
        elif i == instant:
            definitions.append("kyc-instant")
        elif i % 4 == 1:
            definitions.append(REVIEW)
        elif i % 4 == 3:
            definitions.append("kyc-awaiting")
        else:
            definitions.append("kyc-basic")
    return definitions


async def run_demo(total: int, *, seed: int = 7) -> DemoReport:
    from aiohttp import web

    from ..auth import OrganizationTokenAuth
    from ..session import Session
    from ..testing import Simulator, WorkflowDefinition

    rows = [DemoRow(i, definition) for i, definition in enumerate(plan(total))]
    async with Simulator(time_scale=TIME_SCALE, seed=seed) as sim:
        # Finishes after 0.9 s: by then the early webhooks are done and the drops have begun.
        sim.define(REVIEW, WorkflowDefinition(("IN_PROGRESS", "COMPLETED"), duration=9.0))
        session = Session(
            sim.base_url,
            OrganizationTokenAuth(sim.organization_token()),
            allow_insecure_http=True,
            poll=poll_policy(),
        )
        received = 0

        def count_event(event: WebhookEvent) -> None:
            nonlocal received
            received += 1

        session.on_event(count_event)
        async with session:
            app = web.Application()
            app.add_subapp("/webhooks", session.webhook_app())
            async with serve(app) as served:
                sim.add_webhook_url(f"{served.url}/webhooks/")
                start = time.monotonic()
                tasks = {row.index: asyncio.create_task(_one(session, row)) for row in rows}
                early = [tasks[row.index] for row in rows if row.definition != REVIEW]
                await asyncio.gather(*early)
                # From now on every webhook is lost: the late workflows must finish by polling.
                sim.faults.drop_webhooks = 1.0
                await asyncio.gather(*tasks.values())
                wall_time = time.monotonic() - start
                sim.faults.drop_webhooks = 0.0
                executions = [DemoRow(i, name) for i, name in enumerate(EXECUTIONS)]
                await asyncio.gather(*(_execution(session, row) for row in executions))
        calls = sim.calls_by_route
        return DemoReport(
            rows=rows,
            wall_time=wall_time,
            api_calls=sum(calls.values()),
            polls=calls["GET /workflows/{id}"],
            webhooks_received=received,
            executions=executions,
        )


EXECUTIONS = ("kyc-basic", "kyc-instant")
"""The execution flow: one finished by webhook, one final in the start answer."""


async def _execution(session: Session, row: DemoRow) -> None:
    try:
        record = await session.create_record("customers", {"companyName": "Demo Company"})
        outcome = await session.execute_and_wait(
            row.definition,
            locale="en",
            parameters={},
            record_id=record.id,
            timeout=WAIT_TIMEOUT,
            raise_on_failure=False,
        )
    except WorkflowsError as exc:
        row.error = f"{type(exc).__name__}: {exc}"
        return
    _fill(row, outcome)


def _fill(row: DemoRow, outcome: WorkflowOutcome[WorkflowResult | None]) -> None:
    row.workflow_id = outcome.workflow.id
    row.status = outcome.workflow.status
    row.channel = str(outcome.channel)
    row.elapsed = outcome.elapsed


async def _one(session: Session, row: DemoRow) -> None:
    try:
        case = await session.create_case(company_name=f"Demo Company {row.index + 1}")
        outcome = await session.run_and_wait(
            case.id, row.definition, timeout=WAIT_TIMEOUT, raise_on_failure=False
        )
    except WorkflowsError as exc:
        row.error = f"{type(exc).__name__}: {exc}"
        return
    _fill(row, outcome)


def format_table(rows: list[DemoRow]) -> str:
    cells = [
        (
            row.workflow_id[:8] or "-",
            row.definition,
            row.status or "ERROR",
            row.channel or "-",
            f"{row.elapsed:.2f}",
        )
        for row in rows
    ]
    widths = [max(len(c[i]) for c in [COLUMNS, *cells]) for i in range(len(COLUMNS))]

    def line(values: tuple[str, ...]) -> str:
        parts = [v.ljust(w) for v, w in zip(values[:-1], widths[:-1], strict=True)]
        return "  ".join([*parts, values[-1].rjust(widths[-1])])

    rule = tuple("-" * w for w in widths)
    return "\n".join([line(COLUMNS), line(rule), *(line(c) for c in cells)])


def format_report(report: DemoReport) -> str:
    channels = Counter(row.channel for row in report.rows if row.channel)
    failed = sum(1 for row in report.rows if DEFAULT_STATUSES.is_failure(row.status))
    errors = [row for row in report.rows if row.error]
    plural = "" if len(report.rows) == 1 else "s"
    by_channel = ", ".join(f"{name} {channels[name]}" for name in ("webhook", "poll", "run"))
    lines = [
        f"workflows-async demo: {len(report.rows)} workflow{plural} against the local Simulator",
        "(webhooks are dropped once the early workflows are done; the rest finish by polling)",
        "",
        format_table(report.rows),
        "",
        f"finished by: {by_channel}",
        f"failures: {failed}    errors: {len(errors)}    wall time: {report.wall_time:.2f} s",
        f"API calls: {report.api_calls} (polls: {report.polls})    "
        f"webhook events received: {report.webhooks_received}",
    ]
    lines += [f"error in row {row.index + 1}: {row.error}" for row in errors]
    if report.executions:
        lines += [
            "",
            "execution flow: POST /workflows for a record (create_record + execute_and_wait)",
            "",
            format_table(report.executions),
        ]
        lines += [
            f"error in execution {row.index + 1}: {row.error}"
            for row in report.executions
            if row.error
        ]
    return "\n".join(lines)


def report_json(report: DemoReport) -> dict[str, Any]:
    def rows(rows: list[DemoRow]) -> list[dict[str, Any]]:
        return [
            {
                "workflowId": row.workflow_id or None,
                "definition": row.definition,
                "status": row.status or None,
                "channel": row.channel or None,
                "elapsed": round(row.elapsed, 3),
                "error": row.error,
            }
            for row in rows
        ]

    return {
        "workflows": rows(report.rows),
        "executions": rows(report.executions),
        "wallTime": round(report.wall_time, 3),
        "apiCalls": report.api_calls,
        "polls": report.polls,
        "webhooksReceived": report.webhooks_received,
    }
