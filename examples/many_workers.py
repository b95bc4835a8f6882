"""Many workers behind one webhook URL, sharing completions through Redis.

Each worker is an aiohttp app with the Session's webhook sub-app mounted at ``/webhooks`` and a
``RedisBus``: a webhook may land on any worker, and the waiter sitting in another one still
finishes, because the event travels through Redis. Run one of these per process or machine and
put them behind your load balancer; the balancer's ``/webhooks/`` URL is the webhook URL you
configure with the platform::

    export WORKFLOWS_BASE_URL=https://api.example.com WORKFLOWS_API_KEY=... WORKFLOWS_API_SECRET=...
    python examples/many_workers.py --redis redis://127.0.0.1:6379/0 --port 8081
    python examples/many_workers.py --redis redis://127.0.0.1:6379/0 --port 8082

A worker also answers ``POST /verifications`` with ``{"caseId": ..., "workflowDefinitionId":
...}``: it runs the workflow and waits for its result.

``--demo`` runs the whole picture on this machine and exits: three workers in this process (each
its own Session, RedisBus and localhost site), a Simulator of the API, and a round-robin balancer
in front of the workers. It prints which worker received each webhook and which worker's waiter
finished. ``--spawn-redis`` starts a throwaway redis-server for it (needs ``redis-server`` on
PATH); otherwise the demo uses ``--redis``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

import workflows_async as wa
from workflows_async.redis_bus import mask_url
from workflows_async.testing import RedisServer, RedisServerError, Simulator
from workflows_async.testing import serve as serve_locally  # the demo's sites: 127.0.0.1, port 0

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
log = logging.getLogger("many_workers")

SESSION = web.AppKey("session", wa.Session)


# -- one worker -------------------------------------------------------------------------------


def worker_app(session: wa.Session, name: str) -> web.Application:
    """The webhook sub-app at ``/webhooks/`` plus one endpoint that runs a workflow and waits."""
    app = web.Application()
    app[SESSION] = session
    app.add_subapp("/webhooks", session.webhook_app())
    app.router.add_post("/verifications", verify)

    # Every worker registers the hook; once=True makes it run in one of them per event.
    @session.on_event(once=True)
    def announce(event: wa.WebhookEvent) -> None:
        log.info("%s: workflow %s is now %s", name, event.workflow_id, event.status)

    return app


async def verify(request: web.Request) -> web.Response:
    session = request.app[SESSION]
    try:
        body = await request.json()
        case_id, definition = str(body["caseId"]), str(body["workflowDefinitionId"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text="send JSON with caseId and workflowDefinitionId") from None
    try:
        outcome = await session.run_and_wait(
            case_id, definition, raise_on_failure=False, timeout=600
        )
    except wa.ConfigurationError as exc:  # e.g. a malformed case id
        raise web.HTTPBadRequest(text=str(exc)) from None
    except wa.WorkflowTimeout as exc:
        # Keep exc.workflow_id somewhere durable: any worker can `await session.wait(id)` later.
        return web.json_response({"workflowId": exc.workflow_id, "status": "PENDING"}, status=202)
    return web.json_response(
        {
            "workflowId": outcome.workflow.id,
            "status": outcome.workflow.status,
            "channel": outcome.channel.value,
            "elapsed": outcome.elapsed,
            "result": outcome.result.data if outcome.result is not None else None,
        }
    )


async def serve(redis_url: str, host: str, port: int) -> None:
    """Run one production worker until SIGINT or SIGTERM."""
    session = wa.Session.from_env(bus=wa.RedisBus(redis_url))
    async with session:
        runner = web.AppRunner(worker_app(session, f"{host}:{port}"))
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("worker on http://%s:%d, webhooks at /webhooks/", host, port)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        try:
            await stop.wait()  # then: stop taking webhooks, fail pending waits, close the bus
        finally:
            await runner.cleanup()


# -- the demo ---------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoWorker:
    name: str
    session: wa.Session
    url: str


class RoundRobin:
    """A load balancer in miniature: each webhook POST goes to the next worker in turn, as
    received (raw body and signature header untouched); the worker's answer goes back."""

    def __init__(self, workers: list[DemoWorker], http: aiohttp.ClientSession) -> None:
        self._turns = itertools.cycle(workers[1:] + workers[:1])  # worker-2 has the first turn
        self._http = http
        self.received: dict[str, str] = {}  # workflow id -> the worker its webhook went to

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {
            name: value
            for name in ("Content-Type", "JWS-SIGNATURE")
            if (value := request.headers.get(name)) is not None
        }
        worker = next(self._turns)
        event = json.loads(body)  # only to print it: a real balancer never looks inside
        self.received[event["workflowId"]] = worker.name
        print(f"  webhook {event['status']} for {event['workflowId'][:8]} -> {worker.name}")
        async with self._http.post(f"{worker.url}/webhooks/", data=body, headers=headers) as reply:
            return web.Response(status=reply.status, body=await reply.read())


async def demo(redis_url: str, *, workers: int = 3, runs: int = 6) -> int:
    """Start ``runs`` workflows, waiter on worker 1, 2, 3, 1, ... in turn; the balancer's turn
    is one step ahead, so each webhook lands on a worker that does not wait for it."""
    namespace = f"many-workers-demo-{uuid.uuid4().hex[:8]}"  # keeps clear of real data
    async with Simulator(time_scale=0.05) as sim, contextlib.AsyncExitStack() as stack:
        crew: list[DemoWorker] = []
        for index in range(workers):
            session = wa.Session(
                sim.base_url,
                wa.KeySecretAuth(sim.key, sim.secret),
                allow_insecure_http=True,  # the local Simulator only
                poll=wa.PollPolicy(initial_delay=5.0),  # webhooks arrive well before this
                bus=wa.RedisBus(redis_url, namespace=namespace),
            )
            await stack.enter_async_context(session)
            name = f"worker-{index + 1}"
            served = await stack.enter_async_context(serve_locally(worker_app(session, name)))
            crew.append(DemoWorker(name, session, served.url))

        http = await stack.enter_async_context(aiohttp.ClientSession())
        balancer = RoundRobin(crew, http)
        front = web.Application()
        front.router.add_post("/webhooks/", balancer.handle)
        front_url = (await stack.enter_async_context(serve_locally(front))).url
        sim.add_webhook_url(f"{front_url}/webhooks/")
        print(f"{workers} workers behind {front_url}/webhooks/, Redis at {mask_url(redis_url)}")

        completed = crossed = 0
        for turn in range(runs):
            worker = crew[turn % len(crew)]
            case = await worker.session.create_case(first_name="Demo")
            request = {"caseId": case.id, "workflowDefinitionId": "kyc-basic"}
            async with http.post(f"{worker.url}/verifications", json=request) as reply:
                reply.raise_for_status()
                outcome = await reply.json()
            got = balancer.received.get(outcome["workflowId"], "nobody")
            completed += outcome["status"] == "COMPLETED"
            crossed += got not in ("nobody", worker.name)
            print(
                f"  waiter on {worker.name}: {outcome['workflowId'][:8]} {outcome['status']}"
                f" by {outcome['channel']} in {outcome['elapsed'] * 1000:.0f} ms"
            )
        print(
            f"{completed} of {runs} workflows completed; {crossed} webhooks landed on another"
            " worker than the waiting one and reached the waiter through Redis"
        )
        return 0 if completed == runs else 1


# -- a throwaway redis-server -------------------------------------------------------------


@contextlib.asynccontextmanager
async def spawned_redis() -> AsyncIterator[str]:
    """A redis-server on a free localhost port that keeps nothing on disk; its URL."""
    try:
        server = RedisServer()
        await asyncio.to_thread(server.start)
    except RedisServerError as exc:
        raise SystemExit(f"--spawn-redis: {exc}") from None
    try:
        yield server.url
    finally:
        await asyncio.to_thread(server.cleanup)


async def main() -> int:
    args = parse_args()
    if not args.demo:
        await serve(args.redis, args.host, args.port)
        return 0
    if args.spawn_redis:
        async with spawned_redis() as url:
            return await demo(url, workers=args.workers)
    if not await asyncio.to_thread(_reachable, args.redis):
        print(f"cannot reach Redis at {mask_url(args.redis)}: start it, or pass --spawn-redis")
        return 2
    return await demo(args.redis, workers=args.workers)


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1.0):
            return True
    except OSError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis", default=DEFAULT_REDIS, help=f"Redis URL (default {DEFAULT_REDIS})"
    )
    parser.add_argument("--host", default="127.0.0.1", help="worker: address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="worker: port to listen on")
    parser.add_argument("--demo", action="store_true", help="run the in-process demo and exit")
    parser.add_argument("--workers", type=int, default=3, help="demo: how many workers")
    parser.add_argument("--spawn-redis", action="store_true", help="demo: start a redis-server")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    sys.exit(asyncio.run(main()))
