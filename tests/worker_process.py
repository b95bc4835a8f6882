"""One worker of a test cluster, run as its own process by ``tests/test_many_workers.py``.

It serves, on 127.0.0.1 and a port the system picks, the Session's webhook sub-app at
``/webhooks/`` plus a small control API for the test, and prints ``NAME ready on PORT; resumed N``
once it does:

- ``POST /run?count=K&definition=D&batch=B``: K ``run_and_wait`` calls for one new case (its
  id is the answer), each recorded when done;
- ``POST /start?count=K&definition=D&batch=B``: K ``run_workflow`` calls whose ids are written
  to the journal (``--journal``) before the answer, then one ``wait(id)`` per id;
- ``GET /state``: results, pending ids, registry and bus counters, once-hook calls.

On start it resumes, with ``wait(id)``, every journalled id that has no ``done`` line: that is
how a restarted worker finishes what its killed predecessor started.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

import workflows_async as wa
from workflows_async.testing import serve


class Journal:
    """Append-only ``started <id>`` / ``done <id>`` lines, flushed to disk before we go on."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def unfinished(self) -> list[str]:
        if self.path is None or not self.path.exists():
            return []
        started: dict[str, None] = {}
        for line in self.path.read_text().splitlines():
            kind, _, workflow_id = line.partition(" ")
            if kind == "started":
                started[workflow_id] = None
            elif kind == "done":
                started.pop(workflow_id, None)
        return list(started)

    def write(self, kind: str, workflow_ids: list[str]) -> None:
        if self.path is None or not workflow_ids:
            return
        with self.path.open("a") as journal:
            journal.writelines(f"{kind} {workflow_id}\n" for workflow_id in workflow_ids)
            journal.flush()
            os.fsync(journal.fileno())


class Worker:
    def __init__(self, name: str, session: wa.Session, bus: wa.RedisBus, journal: Journal) -> None:
        self.name = name
        self.session = session
        self.bus = bus
        self.journal = journal
        self.results: list[dict[str, Any]] = []
        self.hook_calls: collections.Counter[str] = collections.Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        session.on_event(self.count_hook, once=True)

    def count_hook(self, event: wa.WebhookEvent) -> None:
        self.hook_calls[event.dedup_key] += 1

    def spawn(self, batch: str, wait: Coroutine[Any, Any, wa.WorkflowOutcome]) -> None:
        task = asyncio.create_task(self.record(batch, wait))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def record(self, batch: str, wait: Coroutine[Any, Any, wa.WorkflowOutcome]) -> None:
        entry: dict[str, Any] = {"batch": batch, "worker": self.name}
        try:
            outcome = await wait
        except wa.WorkflowsError as exc:
            entry.update(error=f"{type(exc).__name__}: {exc}")
            entry["workflow_id"] = getattr(exc, "workflow_id", None)
        else:
            entry.update(
                workflow_id=outcome.workflow.id,
                status=outcome.workflow.status,
                channel=outcome.channel.value,
            )
            self.journal.write("done", [outcome.workflow.id])
        self.results.append(entry)

    def resume(self) -> list[str]:
        unfinished = self.journal.unfinished()
        for workflow_id in unfinished:
            self.spawn("resumed", self.session.wait(workflow_id, timeout=60))
        return unfinished

    async def run(self, request: web.Request) -> web.Response:
        count, definition, batch = _batch(request)
        case = await self.session.create_case(first_name="Worker")
        for _ in range(count):
            self.spawn(batch, self.session.run_and_wait(case.id, definition, timeout=60))
        return web.json_response({"case_id": case.id})

    async def start(self, request: web.Request) -> web.Response:
        count, definition, batch = _batch(request)
        case = await self.session.create_case(first_name="Worker")
        runs = [self.session.run_workflow(case.id, definition) for _ in range(count)]
        ids = [workflow.id for workflow in await asyncio.gather(*runs)]
        self.journal.write("started", ids)  # persisted before anyone is told about them
        for workflow_id in ids:
            self.spawn(batch, self.session.wait(workflow_id, timeout=60))
        return web.json_response({"ids": ids})

    async def state(self, request: web.Request) -> web.Response:
        registry = self.session._waiting.registry
        stats = self.session.stats()
        return web.json_response(
            {
                "name": self.name,
                "pid": os.getpid(),
                "results": self.results,
                "pending": self.session.pending(),
                "dispatched": stats.webhooks.delivered,
                "duplicates": registry.duplicates,
                "claimed_duplicates": stats.webhooks.duplicates,
                "deferred_duplicates": stats.webhooks.refused.get("in_progress", 0),
                "hooks": dict(self.hook_calls),
                "bus": {
                    "healthy": self.bus.healthy,
                    "published": self.bus.published,
                    "delivered": self.bus.delivered,
                    "reconnects": self.bus.reconnects,
                },
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.add_subapp("/webhooks", self.session.webhook_app())
        app.router.add_post("/run", self.run)
        app.router.add_post("/start", self.start)
        app.router.add_get("/state", self.state)
        return app


def _batch(request: web.Request) -> tuple[int, str, str]:
    query = request.query
    return int(query.get("count", "1")), query.get("definition", "kyc-basic"), query["batch"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis:// URL of the shared bus")
    parser.add_argument("--api", required=True, help="base URL of the (simulated) API")
    parser.add_argument("--name", default="worker")
    parser.add_argument("--key", default="test-key")
    parser.add_argument("--secret", default="test-secret")
    parser.add_argument("--journal", type=Path, default=None)
    parser.add_argument("--namespace", default="workflows_async")
    parser.add_argument("--initial-delay", type=float, default=5.0)
    parser.add_argument("--max-interval", type=float, default=60.0)
    parser.add_argument("--ping-interval", type=float, default=0.5)
    parser.add_argument("--reconnect-max-delay", type=float, default=0.2)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    bus = wa.RedisBus(
        args.redis,
        namespace=args.namespace,
        ping_interval=args.ping_interval,
        reconnect_max_delay=args.reconnect_max_delay,
    )
    poll = wa.PollPolicy(initial_delay=args.initial_delay, max_interval=args.max_interval)
    session = wa.Session(
        args.api,
        wa.KeySecretAuth(args.key, args.secret),
        allow_insecure_http=True,
        poll=poll,
        bus=bus,
    )
    # `async with` subscribes to the bus at once, so every event published from here on
    # reaches this process: the test counts dispatches per process.
    async with session:
        worker = Worker(args.name, session, bus, Journal(args.journal))
        try:
            async with serve(worker.app()) as served:
                resumed = worker.resume()
                print(f"{args.name} ready on {served.port}; resumed {len(resumed)}", flush=True)
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(signum, stop.set)
                await stop.wait()
        finally:
            for task in list(worker.tasks):
                task.cancel()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
