"""A webhook received by a FastAPI process (the ASGI receiver under uvicorn) resolves a wait in
another process (an aiohttp-based Session) through one RedisBus (issue 12): the worker pattern
of arq/taskiq, with the web tier receiving the webhooks and the worker waiting."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from redis_server import RedisServer

import workflows_async as wa
from workflows_async.testing import Simulator

HERE = Path(__file__).resolve().parent
NO_POLLS = wa.PollPolicy(initial_delay=600.0)  # only a webhook can end the wait in time


async def test_a_webhook_on_the_fastapi_tier_resolves_a_wait_in_the_worker(
    redis_server: RedisServer,
) -> None:
    async with Simulator(time_scale=0.05) as sim:
        web_tier = subprocess.Popen(  # noqa: S603, ASYNC220 - started once, before the test
            [sys.executable, str(HERE / "fastapi_worker.py"),
             "--redis", redis_server.url, "--base-url", sim.base_url],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert web_tier.stdout is not None
            ready = await asyncio.wait_for(asyncio.to_thread(web_tier.stdout.readline), 30)
            word, _, url = ready.decode().strip().partition(" ")
            assert word == "ready", f"the FastAPI process did not start: {ready!r}"
            sim.add_webhook_url(f"{url}/webhooks/")
            # The worker: its Session opened at start-up on the same RedisBus; a job waits.
            worker = wa.Session(
                sim.base_url,
                wa.KeySecretAuth(sim.key, sim.secret),
                allow_insecure_http=True,
                bus=wa.RedisBus(redis_server.url),
                poll=NO_POLLS,
            )
            async with worker:
                case = await worker.create_case(company_name="Acme")
                started = await worker.run_workflow(case.id, "kyc-basic")
                outcome = await worker.wait(started.id, timeout=30)
        finally:
            web_tier.terminate()
            web_tier.wait(timeout=20)
            if web_tier.stdout is not None:
                web_tier.stdout.close()
    assert outcome.workflow.status == "COMPLETED"
    assert outcome.channel is wa.Channel.WEBHOOK
    assert sim.calls_by_route["GET /workflows/{id}"] <= 1  # wait(id) looks once, then listens
