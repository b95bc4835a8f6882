"""A webhook received by a FastAPI process (the ASGI receiver under uvicorn) resolves a wait in
another process (an aiohttp-based Session) through one RedisBus (issue 12): the worker pattern
of arq/taskiq, with the web tier receiving the webhooks and the worker waiting."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
from redis_server import RedisServer
from stack import free_port

import workflows_async as wa
from workflows_async.testing import Simulator

HERE = Path(__file__).resolve().parent
NO_POLLS = wa.PollPolicy(initial_delay=600.0)  # only a webhook can end the wait in time


async def until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession() as client:
        while True:
            assert process.poll() is None, "the FastAPI process exited"
            try:
                async with client.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def test_a_webhook_on_the_fastapi_tier_resolves_a_wait_in_the_worker(
    redis_server: RedisServer,
) -> None:
    async with Simulator(time_scale=0.05) as sim:
        port = free_port()
        web_tier = subprocess.Popen(  # noqa: S603, ASYNC220 - started once, before the test
            [sys.executable, str(HERE / "fastapi_worker.py"), "--port", str(port),
             "--redis", redis_server.url, "--base-url", sim.base_url],
        )  # fmt: skip
        try:
            await until_healthy(f"http://127.0.0.1:{port}/health", web_tier)
            sim.add_webhook_url(f"http://127.0.0.1:{port}/webhooks/")
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
    assert outcome.workflow.status == "COMPLETED"
    assert outcome.channel is wa.Channel.WEBHOOK
    assert sim.calls_by_route["GET /workflows/{id}"] <= 1  # wait(id) looks once, then listens
