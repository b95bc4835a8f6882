"""How to test YOUR code against the Simulator with the package's pytest fixtures.

The fixtures come with the package (a pytest plugin registered on install):
``workflows_session`` is a Session on a fresh Simulator (``workflows_simulator``) with fast
timings, an organization token and its webhook receiver served and registered; all of it is
closed after each test. Change the settings per test with
``@pytest.mark.workflows_simulator(...)`` (the Simulator) and
``@pytest.mark.workflows_session(...)`` (``webhooks=False``, ``scopes=[...]``, Session options).

    pytest examples/test_with_simulator.py      # or: python examples/test_with_simulator.py
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from workflows_async import OutcomeUnknownError, Session
from workflows_async.testing import Faults, Simulator

# -- the application code under test ------------------------------------------------------


async def onboard(session: Session, company_name: str, definition: str = "kyc-basic") -> str:
    """Your code: "approved" when the KYC workflow completes, "rejected" when it fails."""
    case = await session.create_case(company_name=company_name)
    outcome = await session.run_and_wait(case.id, definition, raise_on_failure=False)
    return "approved" if outcome.succeeded else "rejected"


# -- the tests ----------------------------------------------------------------------------

pytestmark = pytest.mark.asyncio  # works whether pytest-asyncio runs in auto or strict mode


async def test_completed_workflow_is_approved(workflows_session: Session) -> None:
    assert await onboard(workflows_session, "Example Ltd") == "approved"


async def test_failed_workflow_is_rejected(workflows_session: Session) -> None:
    assert await onboard(workflows_session, "Example Ltd", definition="kyc-failing") == "rejected"


async def test_webhook_finishes_the_wait(workflows_session: Session) -> None:
    # The workflow ends after 5 ms; the signed webhook arrives long before the first poll.
    case = await workflows_session.create_case(company_name="Example Ltd")
    outcome = await workflows_session.run_and_wait(case.id, "kyc-basic", timeout=10)
    assert (outcome.workflow.status, outcome.channel) == ("COMPLETED", "webhook")


@pytest.mark.workflows_simulator(faults=Faults(drop_webhooks=1.0))
async def test_lost_webhooks_still_finish_by_polling(
    workflows_session: Session, workflows_simulator: Simulator
) -> None:
    case = await workflows_session.create_case(company_name="Example Ltd")
    outcome = await workflows_session.run_and_wait(case.id, "kyc-basic", timeout=10)
    assert outcome.channel == "poll"
    attempts = await workflows_simulator.wait_for_webhooks(1, timeout=10)
    assert attempts[0].outcome == "dropped"


async def test_a_run_whose_answer_is_lost_is_not_resent(
    workflows_session: Session, workflows_simulator: Simulator
) -> None:
    # One fault, aimed at one route and one occurrence: the run takes effect, its answer is a 503.
    workflows_simulator.fail_next("POST", "/workflows/run", status=503, after_effect=True)
    case = await workflows_session.create_case(company_name="Example Ltd")
    with pytest.raises(OutcomeUnknownError):
        await workflows_session.run_and_wait(case.id, "kyc-basic", timeout=10)
    assert workflows_simulator.calls_by_route["POST /workflows/run"] == 1


async def main() -> int:
    """Run this file's tests with pytest, in a child process of its own."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "pytest", "-q", __file__)
    return await child.wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
