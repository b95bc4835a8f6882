"""How to test YOUR code against the Simulator with the ``workflows_simulator`` pytest fixture.

The fixture comes with the package (a pytest plugin registered on install): each test gets a
started Simulator on 127.0.0.1 with fast timings, closed afterwards. Change its settings per
test with ``@pytest.mark.workflows_simulator(...)``.

    pytest examples/test_with_simulator.py      # or: python examples/test_with_simulator.py
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from workflows_async import KeySecretAuth, PollPolicy, Session
from workflows_async.testing import Faults, Simulator

# -- the application code under test ------------------------------------------------------


async def onboard(session: Session, company_name: str, definition: str = "kyc-basic") -> str:
    """Your code: "approved" when the KYC workflow completes, "rejected" when it fails."""
    case = await session.create_case(company_name=company_name)
    outcome = await session.run_and_wait(case.id, definition, raise_on_failure=False)
    return "approved" if outcome.succeeded else "rejected"


# -- the tests ----------------------------------------------------------------------------

pytestmark = pytest.mark.asyncio  # works whether pytest-asyncio runs in auto or strict mode


@pytest_asyncio.fixture
async def session(workflows_simulator: Simulator) -> AsyncIterator[Session]:
    """A Session pointed at the test's Simulator; the first poll comes after 0.2 s."""
    async with Session(
        workflows_simulator.base_url,
        KeySecretAuth(workflows_simulator.key, workflows_simulator.secret),
        allow_insecure_http=True,
        poll=PollPolicy(initial_delay=0.2, max_interval=0.5),
    ) as session:
        yield session


@pytest_asyncio.fixture
async def webhooks(session: Session, workflows_simulator: Simulator) -> AsyncIterator[None]:
    """Serve the Session's webhook receiver and register it with the Simulator."""
    app = web.Application()
    app.add_subapp("/webhooks", session.webhook_app())
    async with TestServer(app, host="127.0.0.1") as server:
        workflows_simulator.add_webhook_url(str(server.make_url("/webhooks/")))
        yield


async def test_completed_workflow_is_approved(session: Session) -> None:
    assert await onboard(session, "Example Ltd") == "approved"


async def test_failed_workflow_is_rejected(session: Session) -> None:
    assert await onboard(session, "Example Ltd", definition="kyc-failing") == "rejected"


@pytest.mark.usefixtures("webhooks")
async def test_webhook_finishes_the_wait(session: Session) -> None:
    # The workflow ends after 5 ms; the signed webhook arrives long before the first poll.
    case = await session.create_case(company_name="Example Ltd")
    outcome = await session.run_and_wait(case.id, "kyc-basic", timeout=10)
    assert (outcome.workflow.status, outcome.channel) == ("COMPLETED", "webhook")


@pytest.mark.workflows_simulator(faults=Faults(drop_webhooks=1.0))
@pytest.mark.usefixtures("webhooks")
async def test_lost_webhooks_still_finish_by_polling(session: Session) -> None:
    case = await session.create_case(company_name="Example Ltd")
    outcome = await session.run_and_wait(case.id, "kyc-basic", timeout=10)
    assert outcome.channel == "poll"


async def main() -> int:
    """Run this file's tests with pytest, in a child process of its own."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "pytest", "-q", __file__)
    return await child.wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
