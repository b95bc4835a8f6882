"""The ready fixtures of the pytest plugin (``workflows_session``) and the Simulator's awaitable
``wait_for_webhooks``, tried in this suite and from a user's project in a pytest subprocess."""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
from pathlib import Path

import pytest

import workflows_async as wa
from workflows_async.testing import Simulator

# -- in this suite -----------------------------------------------------------------------------


async def test_the_session_fixture_finishes_by_webhook(
    workflows_session: wa.Session, workflows_simulator: Simulator
) -> None:
    assert len(workflows_simulator.webhook_urls) == 1
    case = await workflows_session.create_case(first_name="Ada")
    outcome = await workflows_session.run_and_wait(case.id, "kyc-basic", timeout=10)
    assert outcome.result["partyId"]
    attempts = await workflows_simulator.wait_for_webhooks(
        1, workflow_id=outcome.workflow.id, delivered=True, timeout=10
    )
    assert attempts[0].status == "COMPLETED" and attempts[0].outcome == 200


@pytest.mark.workflows_session(webhooks=False, api_version=2)
async def test_the_session_marker_turns_webhooks_off_and_passes_options(
    workflows_session: wa.Session, workflows_simulator: Simulator
) -> None:
    assert workflows_simulator.webhook_urls == () and workflows_session.api_version == 2
    outcome = await workflows_session.run_and_wait(workflow_definition_id="kyc-basic", timeout=10)
    assert outcome.channel == "poll"


@pytest.mark.workflows_session(scopes=["can_view_workspace"])
async def test_the_session_marker_limits_the_token(workflows_session: wa.Session) -> None:
    case = await workflows_session.create_case(first_name="Ada")
    with pytest.raises(wa.PermissionDeniedError) as caught:
        await workflows_session.run_and_wait(case.id, "kyc-basic", timeout=10)
    assert caught.value.permission == "can_run"


async def test_wait_for_webhooks_wakes_on_each_attempt(workflows_simulator: Simulator) -> None:
    sim = workflows_simulator
    sim.add_webhook_url("http://127.0.0.1:9/nobody-listens")  # refused: "error" attempts
    sim.faults.drop_webhooks = 1.0
    waiting = asyncio.create_task(sim.wait_for_webhooks(2, timeout=10))
    await asyncio.sleep(0)
    assert not waiting.done()
    async with wa.Session(
        sim.base_url, wa.OrganizationTokenAuth(sim.organization_token()), allow_insecure_http=True
    ) as session:
        case = await session.create_case(first_name="Ada")
        await session.run_workflow(case.id, "kyc-awaiting")  # two status changes to announce
        attempts = await waiting
    assert [a.outcome for a in attempts[:2]] == ["dropped", "dropped"]
    with pytest.raises(TimeoutError):
        await sim.wait_for_webhooks(1, delivered=True, timeout=0.05)


async def test_wait_for_webhooks_needs_a_serving_simulator() -> None:
    with pytest.raises(RuntimeError, match="not serving"):
        await Simulator().wait_for_webhooks(1, timeout=1)


# -- from a user's project ---------------------------------------------------------------------

USER_TEST = """
import pytest

import workflows_async as wa
from workflows_async.testing import Faults, Simulator


async def test_by_webhook(workflows_session: wa.Session) -> None:
    case = await workflows_session.create_case(first_name="Ada")
    outcome = await workflows_session.run_and_wait(case.id, "kyc-basic", timeout=10)
    assert outcome.channel == "webhook" and outcome.result["partyId"]


@pytest.mark.workflows_simulator(faults=Faults(drop_webhooks=1.0))
async def test_lost_webhooks(workflows_session: wa.Session, workflows_simulator: Simulator) -> None:
    case = await workflows_session.create_case(first_name="Ada")
    outcome = await workflows_session.run_and_wait(case.id, "kyc-basic", timeout=10)
    assert outcome.channel == "poll"
    attempts = await workflows_simulator.wait_for_webhooks(1, timeout=10)
    assert attempts[0].outcome == "dropped"


async def test_a_lost_run_answer(
    workflows_session: wa.Session, workflows_simulator: Simulator
) -> None:
    workflows_simulator.fail_next("POST", "/workflows/run", status=503, after_effect=True)
    case = await workflows_session.create_case(first_name="Ada")
    with pytest.raises(wa.OutcomeUnknownError):
        await workflows_session.run_and_wait(case.id, "kyc-basic", timeout=10)
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
async def test_the_fixtures_in_a_user_project(tmp_path: Path, mode: str) -> None:
    marks = "\npytestmark = pytest.mark.asyncio\n" if mode == "strict" else ""
    (tmp_path / "test_user.py").write_text(USER_TEST + marks)
    ini = f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(ini)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", "-W", "error"]
    if not importlib.metadata.entry_points(group="pytest11", name="workflows_async"):
        args += ["-p", "workflows_async.testing.plugin"]  # a checkout that is not installed
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(100):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert "3 passed" in output.decode()
