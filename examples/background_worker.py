"""A background worker that runs many workflows at once, at most N at a time.

- An ``asyncio.Semaphore`` bounds how many workflows are in flight.
- ``session.on_event`` logs every verified webhook event (off the webhook's request path).
- Failed workflows are counted, not fatal: ``WorkflowFailed`` carries the final status.

Run it as a script (it uses the local Simulator, no network needed):

    python examples/background_worker.py
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiohttp import web

from workflows_async import (
    KeySecretAuth,
    PollPolicy,
    Session,
    WebhookEvent,
    WorkflowFailed,
    WorkflowsError,
)
from workflows_async.testing import Simulator

log = logging.getLogger("worker")

CONCURRENCY = 3
# The jobs to process: (a reference of yours, the workflow definition to run).
JOBS = [(f"job-{n}", "kyc-failing" if n == 4 else "kyc-basic") for n in range(1, 9)]


async def process(session: Session, slots: asyncio.Semaphore, job: str, definition: str) -> str:
    """Run one job's workflow; returns its final status (or "ERROR")."""
    async with slots:  # wait here while CONCURRENCY workflows are already running
        try:
            case = await session.create_case(company_name=f"Company of {job}")
            outcome = await session.run_and_wait(case.id, definition, timeout=60)
        except WorkflowFailed as exc:
            log.warning("%s: workflow %s ended %s", job, exc.workflow_id, exc.workflow.status)
            return exc.workflow.status
        except WorkflowsError as exc:
            log.error("%s: %s", job, exc)
            return "ERROR"
        log.info("%s: %s by %s in %.2f s", job, outcome.workflow.status, outcome.channel,
                 outcome.elapsed)  # fmt: skip
        return outcome.workflow.status


async def main() -> Counter[str]:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    async with Simulator(time_scale=0.05) as sim:
        session = Session(
            sim.base_url,
            KeySecretAuth(sim.key, sim.secret),
            allow_insecure_http=True,
            poll=PollPolicy(initial_delay=1.0),  # webhooks usually win; polls are the net
        )

        @session.on_event
        def log_event(event: WebhookEvent) -> None:
            # Called once per verified webhook event; ids and status only, no personal data.
            log.info("event: workflow %s is %s", event.workflow_id[:8], event.status)

        async with session:
            # The webhook receiver, served on 127.0.0.1 (behind your HTTPS proxy in production).
            app = web.Application()
            app.add_subapp("/webhooks", session.webhook_app())
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, "127.0.0.1", 0).start()
                sim.add_webhook_url(f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/")

                slots = asyncio.Semaphore(CONCURRENCY)
                statuses = await asyncio.gather(
                    *(process(session, slots, job, definition) for job, definition in JOBS)
                )
            finally:
                await runner.cleanup()
    totals = Counter(statuses)
    print(f"processed {len(JOBS)} workflows: " + ", ".join(
        f"{count} {status}" for status, count in sorted(totals.items())
    ))  # fmt: skip
    return totals


if __name__ == "__main__":
    asyncio.run(main())
