"""``run_and_wait(on_started=...)``: told the workflow once the run answered, before waiting."""

from __future__ import annotations

import pytest
from stack import stack

import workflows_async as wa


async def test_sync_callback_sees_the_running_workflow_before_the_wait() -> None:
    async with stack() as s:
        case = await s.session.create_case(company_name="Acme")
        seen: list[tuple[str, str, str]] = []

        def started(workflow: wa.Workflow) -> None:
            seen.append((workflow.id, workflow.status, s.sim.workflow_status(workflow.id)))

        outcome = await s.session.run_and_wait(case.id, "kyc-basic", timeout=30, on_started=started)
        assert len(seen) == 1
        workflow_id, status, _ = seen[0]
        assert workflow_id == outcome.workflow.id
        assert not s.session.statuses.is_terminal(status)  # called before the wait ended it


async def test_async_callback_is_awaited_also_for_a_terminal_run() -> None:
    async with stack() as s:
        case = await s.session.create_case(company_name="Acme")
        seen: list[str] = []

        async def started(workflow: wa.Workflow) -> None:
            seen.append(workflow.status)

        outcome = await s.session.run_and_wait(
            case.id, "kyc-instant", timeout=30, on_started=started
        )
        assert seen == [outcome.workflow.status] == ["COMPLETED"]


async def test_what_the_callback_raises_leaves_run_and_wait() -> None:
    async with stack() as s:
        case = await s.session.create_case(company_name="Acme")

        def started(workflow: wa.Workflow) -> None:
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            await s.session.run_and_wait(case.id, "kyc-basic", timeout=30, on_started=started)
        assert s.sim.calls_by_route["POST /workflows/run"] == 1
