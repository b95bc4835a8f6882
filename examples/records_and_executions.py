"""Today's API: an organization token, a record in a table, and an execution started with
``POST /workflows`` that the SDK waits for (webhook first, polling as the safety net).

In production::

    session = Session("https://api.transactionlink.io",
                      OrganizationTokenAuth(os.environ["WORKFLOWS_ORG_TOKEN"]), api_version=2)
    # or simply: Session.from_env()  (reads WORKFLOWS_ORG_TOKEN, WORKFLOWS_BASE_URL, ...)

The token needs ``can_run`` on the workflow definition (and the record permissions of your
table). Run it as a script: it starts the Simulator (a local fake of the API) and prints what
happened, never a field value of the record.

    python examples/records_and_executions.py
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aiohttp import web

from workflows_async import (
    OrganizationTokenAuth,
    PermissionDeniedError,
    Session,
    WorkflowFailed,
    WorkflowTimeout,
)
from workflows_async.testing import Simulator

DEFINITION = "kyc-basic"  # your workflow definition id, from the dashboard
TABLE = "customers"  # a records table configured in the dashboard


async def onboard(session: Session, email: str) -> str:
    """Your code: keep the person as a record, run the KYC execution for it, report."""
    record = await session.create_record(TABLE, {"email": email})
    print(f"record {record.id[:8]} version {record.version} fields {sorted(record.fields)}")
    try:
        outcome = await session.execute_and_wait(
            DEFINITION,
            locale="en",
            parameters={"level": "basic"},  # the vendor may log parameters: no personal data
            record_id=record.id,
            expires_at=datetime.now(UTC) + timedelta(days=1),
            timeout=30,
        )
    except WorkflowFailed as exc:
        return f"execution {exc.workflow_id} ended {exc.workflow.status}"
    except WorkflowTimeout as exc:
        return f"execution {exc.workflow_id} still running: await session.wait(id) later"
    except PermissionDeniedError as exc:
        return f"the token lacks {exc.permission}"
    return (
        f"execution {outcome.execution.id[:8]} started {outcome.execution.status}, "
        f"ended {outcome.workflow.status} (by {outcome.channel})"
    )


async def main() -> None:
    async with Simulator(time_scale=0.05) as sim:
        session = Session(
            sim.base_url,
            OrganizationTokenAuth(sim.organization_token()),  # a tot_... token, sent as it is
            api_version=2,
            allow_insecure_http=True,  # the Simulator speaks plain http on 127.0.0.1
        )
        app = web.Application()
        app.add_subapp("/webhooks", session.webhook_app())
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            sim.add_webhook_url(f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/")
            async with session:
                print(await onboard(session, "ada@example.test"))
            # A token without can_run on the definition gets a 403 that names it.
            limited = Session(
                sim.base_url,
                OrganizationTokenAuth(sim.organization_token(["can_create_records"])),
                api_version=2,
                allow_insecure_http=True,
            )
            async with limited:
                print(await onboard(limited, "bob@example.test"))
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
