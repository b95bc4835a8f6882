"""Webhook-to-waiter latency with many waits pending, at a steady rate of webhooks.

``pending`` caller tasks wait (``session._waiting.completion(id, first_poll=3600)``, so no
poll is ever due); ``events`` of them are then resolved at ``rate`` per second, either by
handing the event to ``session._waiting.publish`` (or to ``publish``, another worker's, which
reaches this Session only through the bus) or by POSTing the signed webhook to the Session's
sub-app over a real localhost socket. Latency runs from just before the hand-over
(or the write to the socket) to the moment the waiting caller runs again. The POST may also go
to another worker process (role ``receiver``, :func:`webhook_receiver`: a Session on the same
RedisBus namespace, serving the webhook sub-app), whose events reach this Session's waiters only
through Redis: the usual case with several workers. Baselines: the same
caller awaiting a bare future set directly, and a bare aiohttp handler that sets that future.
Besides the latencies a scenario keeps when each event was answered (the HTTP answer read, or
the hand-over returned) and the process CPU spent while the events were sent and answered
(sender, receiver and waiters share this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from _memory import library_tasks
from _proc import Ready
from _rawhttp import RawConnection
from aiohttp import web

import workflows_async as wa
from workflows_async.events import WebhookEvent, parse_event
from workflows_async.testing import serve

__all__ = ["Scenario", "measure", "webhook_receiver"]

Send = Callable[[int], Awaitable[None]]
HTTP_CONNECTIONS = 4


class Scenario:
    """One way of resolving waits: ``kind`` is ``bare`` or ``library``, ``path`` is
    ``direct`` or ``http``; ``events`` are (workflow id, body, signature) triples."""

    def __init__(
        self, kind: str, path: str, events: list[tuple[str, bytes, str]], pending: list[str]
    ) -> None:
        self.kind, self.path, self.events, self.pending = kind, path, events, pending
        self.sent: dict[str, float] = {}
        self.woke: dict[str, float] = {}
        self.answered: list[float] = []
        self.cpu_seconds = 0.0  # process CPU from the first send until every waiter woke
        self.tasks_idle = self.tasks_busy = 0
        self.register_seconds = 0.0

    def answer_rate(self) -> float:
        """Events answered per second, from the first send to the last answer: a receiver that
        keeps up answers at the rate of the sends (a backlog it drains before the last send
        does not count against it); one that falls behind finishes late. NaN below two."""
        if len(self.answered) < 2 or not self.sent:
            return math.nan
        span = max(self.answered) - min(self.sent.values())
        return (len(self.answered) - 1) / span if span > 0 else math.inf


async def _pace(count: int, rate: float, senders: list[Send]) -> None:
    """Hand indexes 0..count-1 to the senders at ``rate`` per second."""
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def worker(send: Send) -> None:
        while (index := await queue.get()) is not None:
            await send(index)

    workers = [asyncio.create_task(worker(send)) for send in senders]
    start = time.perf_counter()
    for index in range(count):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(index)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)


async def measure(
    scenario: Scenario,
    rate: float,
    session_options: dict[str, Any],
    requests: list[bytes],
    publish: Callable[[WebhookEvent], Awaitable[object]] | None = None,
    receiver_port: int | None = None,
) -> list[float]:
    """Run ``scenario``; the latencies in seconds. ``requests`` are the raw HTTP requests for
    the ``http`` path, in the order of ``scenario.events``, addressed to ``/hook/``. ``publish``
    replaces this Session's own ``publish`` on the ``direct`` path; ``receiver_port``, on the
    ``http`` path, is another process's receiver (:func:`webhook_receiver`) to POST to instead
    of this Session's sub-app."""
    sc = scenario
    futures: dict[str, asyncio.Future[None]] = {}
    session = wa.Session(
        "http://127.0.0.1:9", wa.TokenAuth("unused"), allow_insecure_http=True, **session_options
    )
    waiting = session._waiting
    serving = contextlib.AsyncExitStack()  # the http path's server, port 0
    connections: list[RawConnection] = []
    port = 0

    async def library_wait(workflow_id: str) -> None:
        await waiting.completion(workflow_id, first_poll=3600.0)
        sc.woke[workflow_id] = time.perf_counter()

    async def bare_wait(workflow_id: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        futures[workflow_id] = future
        await future
        sc.woke[workflow_id] = time.perf_counter()

    async def bare_hook(request: web.Request) -> web.Response:
        body = await request.read()
        futures[json.loads(body)["workflowId"]].set_result(None)
        return web.Response(text="{}", content_type="application/json")

    if receiver_port is not None:
        port = receiver_port
    elif sc.path == "http":
        app = web.Application()
        if sc.kind == "library":
            app.add_subapp("/hook", session.webhook_app())
        else:
            app.router.add_post("/hook/", bare_hook)
        port = (await serving.enter_async_context(serve(app))).port
    try:
        if sc.kind == "library":
            await session.start()
        sc.tasks_idle = library_tasks()
        wait = library_wait if sc.kind == "library" else bare_wait
        started = time.perf_counter()
        tasks = [asyncio.create_task(wait(workflow_id)) for workflow_id in sc.pending]
        while len(waiting.scheduler) + len(futures) < len(sc.pending):  # noqa: ASYNC110
            await asyncio.sleep(0.001)  # the library's own counters are what is awaited
        sc.register_seconds = time.perf_counter() - started
        sc.tasks_busy = library_tasks()
        events = [parse_event(body) for _, body, _ in sc.events]
        ids = [workflow_id for workflow_id, _, _ in sc.events]
        senders: list[Send] = []
        if sc.path == "http":
            for _ in range(HTTP_CONNECTIONS):
                connection = await RawConnection.open("127.0.0.1", port)
                connections.append(connection)

                async def send_http(index: int, connection: RawConnection = connection) -> None:
                    sc.sent[ids[index]] = time.perf_counter()
                    status = await connection.send(requests[index])
                    sc.answered.append(time.perf_counter())
                    if status != 200:
                        raise RuntimeError(f"webhook answered {status}")

                senders.append(send_http)
        elif sc.kind == "library":
            hand_over = waiting.publish if publish is None else publish

            async def send_publish(index: int) -> None:
                sc.sent[ids[index]] = time.perf_counter()
                await hand_over(events[index])
                sc.answered.append(time.perf_counter())

            senders.append(send_publish)
        else:

            async def send_bare(index: int) -> None:
                sc.sent[ids[index]] = time.perf_counter()
                futures[ids[index]].set_result(None)
                sc.answered.append(time.perf_counter())

            senders.append(send_bare)
        cpu = time.process_time()
        await _pace(len(ids), rate, senders)
        async with asyncio.timeout(30):
            by_id = dict(zip(sc.pending, tasks, strict=True))
            await asyncio.gather(*(by_id[workflow_id] for workflow_id in ids))
        sc.cpu_seconds = time.process_time() - cpu
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for connection in connections:
            await connection.close()
        await session.close()
        await serving.aclose()
    return [sc.woke[workflow_id] - sc.sent[workflow_id] for workflow_id in ids]


@asynccontextmanager
async def webhook_receiver(config: dict[str, Any]) -> AsyncIterator[Ready]:
    """Role ``receiver``: another worker. A Session on ``RedisBus(config["redis"],
    namespace=config["namespace"])`` with the webhook key ``config["kid"]``/``config["pem"]``
    pinned, its webhook sub-app served at /hook/; it waits for nothing itself."""
    session = wa.Session(
        "http://127.0.0.1:9",  # never called: the signing key is pinned
        wa.TokenAuth("unused"),
        allow_insecure_http=True,
        webhook_keys={config["kid"]: config["pem"]},
        bus=wa.RedisBus(config["redis"], namespace=config["namespace"]),
    )
    app = web.Application()
    app.add_subapp("/hook", session.webhook_app())

    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"unknown command {command!r}")

    try:
        await session.start()  # subscribed before the first webhook, as a running worker is
        async with serve(app) as served:
            yield {"port": served.port}, handle
    finally:
        await session.close()
