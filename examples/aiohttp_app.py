"""An aiohttp web app that starts a KYC workflow from a request handler and answers with its result.

The app mounts the SDK's webhook receiver at ``/webhooks`` (configure
``https://<your host>/webhooks/`` as the webhook URL at the platform), so ``run_and_wait`` in the
handler usually finishes the moment the platform's webhook arrives, with polling as the safety
net.

Run it as a script: it starts the Simulator (a local fake of the API), serves the app on
127.0.0.1, makes one request to its own ``POST /verify`` and prints the answer.

    python examples/aiohttp_app.py
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from workflows_async import KeySecretAuth, Session, WorkflowFailed, WorkflowTimeout
from workflows_async.testing import Simulator

# Typed keys for what the app keeps (aiohttp's AppKey): the one Session of this process.
SESSION = web.AppKey("session", Session)
DEFINITION = "kyc-basic"  # the workflow definition to run; yours comes from the platform


async def verify(request: web.Request) -> web.Response:
    """``POST /verify`` with ``{"companyName": ...}``: run the KYC workflow and report."""
    session = request.app[SESSION]
    body = await request.json()
    case = await session.create_case(company_name=str(body.get("companyName", "")))
    try:
        # One call: start the workflow, then wait for the webhook (or a poll) that ends it.
        outcome = await session.run_and_wait(case.id, DEFINITION, timeout=30)
    except WorkflowFailed as exc:
        return web.json_response({"workflowId": exc.workflow_id, "status": exc.workflow.status})
    except WorkflowTimeout as exc:
        # Still running: answer now; `await session.wait(exc.workflow_id)` picks it up later.
        return web.json_response({"workflowId": exc.workflow_id, "status": "PENDING"}, status=202)
    return web.json_response(
        {
            "workflowId": outcome.workflow.id,
            "status": outcome.workflow.status,
            "channel": str(outcome.channel),  # "webhook", "poll" or "run"
        }
    )


def create_app(session: Session) -> web.Application:
    """The application: your routes plus the webhook receiver as a sub-app."""
    app = web.Application()
    app[SESSION] = session
    app.router.add_post("/verify", verify)
    app.add_subapp("/webhooks", session.webhook_app())

    async def close_session(app: web.Application) -> None:
        await app[SESSION].close()

    app.on_cleanup.append(close_session)  # the Session closes with the app
    return app


async def main() -> dict[str, Any]:
    # A local fake of the API; in production:
    # Session("https://...", OrganizationTokenAuth("tot_...")).
    async with Simulator(time_scale=0.05) as sim:
        session = Session(
            sim.base_url,
            KeySecretAuth(sim.key, sim.secret),
            allow_insecure_http=True,  # the Simulator speaks plain http on 127.0.0.1
        )
        runner = web.AppRunner(create_app(session))
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)  # port 0: any free port
            await site.start()
            port = runner.addresses[0][1]
            # Tell the (simulated) platform where to send its webhooks.
            sim.add_webhook_url(f"http://127.0.0.1:{port}/webhooks/")

            async with (
                aiohttp.ClientSession() as client,
                client.post(
                    f"http://127.0.0.1:{port}/verify", json={"companyName": "Example Ltd"}
                ) as response,
            ):
                answer: dict[str, Any] = await response.json()
            print(f"POST /verify -> {response.status} {answer}")
        finally:
            await runner.cleanup()  # also closes the Session (on_cleanup)
    return answer


if __name__ == "__main__":
    asyncio.run(main())
