"""A FastAPI app that starts a KYC workflow from a route and answers with its result.

The SDK's webhook receiver is a plain ASGI app, mounted at ``/webhooks`` (configure
``https://<your host>/webhooks`` as the webhook URL at the platform), so ``run_and_wait`` in the
route usually finishes the moment the platform's webhook arrives, with polling as the safety
net. The Session opens and closes with the app (FastAPI's lifespan).

Run it as a script: it starts the Simulator (a local fake of the API), serves the app with
uvicorn on 127.0.0.1, makes one request to its own ``POST /verify`` and prints the answer.

    python examples/fastapi_app.py

In production: ``uvicorn yourmodule:app`` with ``create_app(Session("https://...", ...))``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from workflows_async import KeySecretAuth, Session, WorkflowFailed, WorkflowTimeout
from workflows_async.testing import Simulator

DEFINITION = "kyc-basic"  # the workflow definition to run; yours comes from the platform


def create_app(session: Session) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with session:  # opened in the server's event loop, closed with the app
            yield

    app = FastAPI(lifespan=lifespan)
    webhooks = session.webhook_asgi()
    app.mount("/webhooks", webhooks)  # https://<your host>/webhooks/ ...
    app.add_route("/webhooks", webhooks)  # type: ignore[arg-type]  # ... and /webhooks

    @app.post("/verify")
    async def verify(body: dict[str, Any]) -> JSONResponse:
        case = await session.create_case(company_name=str(body.get("companyName", "")))
        try:
            # One call: start the workflow, then wait for the webhook (or a poll) that ends it.
            outcome = await session.run_and_wait(case.id, DEFINITION, timeout=30)
        except WorkflowFailed as exc:
            return JSONResponse({"workflowId": exc.workflow_id, "status": exc.workflow.status})
        except WorkflowTimeout as exc:
            # Still running: answer now; `await session.wait(exc.workflow_id)` picks it up later.
            return JSONResponse({"workflowId": exc.workflow_id, "status": "PENDING"}, 202)
        return JSONResponse(
            {
                "workflowId": outcome.workflow.id,
                "status": outcome.workflow.status,
                "channel": str(outcome.channel),  # "webhook", "poll" or "run"
            }
        )

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
        config = uvicorn.Config(create_app(session), host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(20):
                while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                    await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]  # port 0: any free port
            # Tell the (simulated) platform where to send its webhooks.
            sim.add_webhook_url(f"http://127.0.0.1:{port}/webhooks")
            async with (
                aiohttp.ClientSession() as client,
                client.post(
                    f"http://127.0.0.1:{port}/verify", json={"companyName": "Example Ltd"}
                ) as response,
            ):
                answer: dict[str, Any] = await response.json()
            print(f"POST /verify -> {response.status} {answer}")
        finally:
            server.should_exit = True
            await serving  # the lifespan closes the Session
    return answer


if __name__ == "__main__":
    asyncio.run(main())
