"""Benchmark 6: one Simulator holding 10,000 workflows under 2,000 requests/s.

Three processes. The Simulator runs alone in a helper process (role ``simcap``). A second
helper (role ``bare``) is a bare aiohttp app that answers the same routes with fixed JSON (the
baseline) and receives the Simulator's webhooks with a plain 200. This process is the load
generator: raw ``aiohttp`` over a pool of keep-alive connections.

Set-up (not timed as load): a token, a few cases, a pool of finished workflows (whose results
the load asks for), then N workflows that last a simulated day, so all N are held at once.
Then an open-loop load at ``RATE``: requests are due at fixed times whatever the answers do, so
a slow server shows as latency and backlog instead of slowing the sender down. The mix is
mostly ``GET /workflows/{id}`` of held workflows, some ``GET .../result`` of finished ones and
some ``POST /workflows/run`` of workflows that end ``FINISH`` seconds later, so webhooks are
signed and delivered during the load. The bare app gets the very same requests first.
The load generator's own garbage collector is off while a load is measured (its full
collections delayed sends by ~25 ms at p99); the servers' collectors run as usual.

The two helpers are roles of ``_child.py`` (``simcap`` and ``bare``, in ``_proc.ROLES``) that
live here, next to the benchmark.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from _memory import rss_bytes
from _proc import Child, Ready
from _report import Mode, Row, Section, percentile
from aiohttp import web
from yarl import URL

from workflows_async.testing import Simulator, WorkflowDefinition, generate_signing_key, serve

__all__ = ["bare_api", "capacity_host", "run"]

RATE = 2000.0  # requests per second offered, open loop
MIX = (("status", 0.85), ("result", 0.10), ("run", 0.05))  # share of each kind of request
HOLD = 86_400.0  # seconds a held workflow lasts (time_scale 1): none ends during the run
FINISH = 0.5  # seconds a workflow started by the load lasts: it ends, and is announced
DONE = 200  # finished workflows made at set-up; the load fetches their results
CASES = 100  # the runs are spread over these cases
CONNECTIONS = 64  # the load generator's keep-alive pool, per target
SETUP_AT_ONCE = 32  # set-up calls in flight
WARMUP = 0.3  # seconds of status reads at RATE before each measured load (connections open)
LAG_LIMIT = 0.005  # a send later than this at p99 means the load generator lagged
TIMEOUT = aiohttp.ClientTimeout(total=30)

_JSON = {"Content-Type": "application/json"}


# -- the helper processes ----------------------------------------------------------------------
_collecting = [False]  # True while _settled_rss collects: that pause is ours, not the server's


def _settled_rss() -> int:
    _collecting[0] = True
    try:
        gc.collect()
    finally:
        _collecting[0] = False
    return rss_bytes()


def _watch_full_collections() -> list[float]:
    """The seconds of each full (generation 2) collection the interpreter starts by itself."""
    pauses: list[float] = []
    began = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2 or _collecting[0]:
            return
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - began[0])

    gc.callbacks.append(on_gc)
    return pauses


def _floor_bytes(n: int) -> float:
    """RSS per workflow of the least a server could keep: a dict of its public fields, by id."""
    before = _settled_rss()
    kept: dict[str, dict[str, str]] = {}
    for _ in range(n):
        workflow_id = str(uuid.uuid4())
        kept[workflow_id] = {"id": workflow_id, "caseId": str(uuid.uuid4()), "status": "DONE"}
    per = (_settled_rss() - before) / n
    del kept
    return per


@asynccontextmanager
async def capacity_host(config: dict[str, Any]) -> AsyncIterator[Ready]:
    """Role ``simcap``: one Simulator; info ``base_url``, ``key``, ``secret``, ``rss`` (idle).

    Command ``stats``: its RSS now, workflows held and how many are final, webhook counters,
    the length of its request log, and the pauses of its automatic full collections."""
    definitions = {
        "cap-hold": WorkflowDefinition(("IN_PROGRESS", "COMPLETED"), HOLD),
        "cap-finish": WorkflowDefinition(("IN_PROGRESS", "COMPLETED"), FINISH),
        "cap-done": WorkflowDefinition(("COMPLETED",), 0.0, terminal_on_run=True),
    }
    sim = Simulator(
        definitions=definitions,
        webhook_urls=[config["webhook_url"]],
        seed=7,
        signing_key=generate_signing_key(),
    )
    pauses = _watch_full_collections()
    async with sim:

        async def handle(command: dict[str, Any]) -> dict[str, Any]:
            if command["cmd"] != "stats":
                raise ValueError(f"unknown command {command!r}")
            workflows = sim.workflows
            return {
                "rss": _settled_rss(),
                "workflows": len(workflows),
                "final": sum(1 for info in workflows.values() if info.final),
                "webhooks_sent": sim.webhooks_sent,
                "webhooks_delivered": sim.webhooks_delivered,
                "requests_logged": len(sim.requests),
                "gc_pauses": list(pauses),
            }

        info = {"base_url": sim.base_url, "key": sim.key, "secret": sim.secret}
        yield {**info, "rss": _settled_rss()}, handle


@asynccontextmanager
async def bare_api(config: dict[str, Any]) -> AsyncIterator[Ready]:
    """Role ``bare``: the same routes answered with fixed JSON, and a webhook receiver.

    Info: ``url`` and ``floor`` (`_floor_bytes` of ``config["floor"]`` workflows, measured in
    this fresh interpreter before it serves anything). Command ``stats``: webhooks received,
    RSS now."""
    floor = _floor_bytes(int(config["floor"]))
    case, workflow = str(uuid.uuid4()), str(uuid.uuid4())
    status = json.dumps({"id": workflow, "caseId": case, "status": "IN_PROGRESS"}).encode()
    result = json.dumps(
        {"workflowId": workflow, "caseId": case, "status": "COMPLETED", "parameters": {}}
    ).encode()
    received = [0]

    async def get_status(request: web.Request) -> web.Response:
        return web.Response(body=status, content_type="application/json")

    async def get_result(request: web.Request) -> web.Response:
        return web.Response(body=result, content_type="application/json")

    async def post_run(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=201, body=status, content_type="application/json")

    async def webhook(request: web.Request) -> web.Response:
        await request.read()
        received[0] += 1
        return web.Response(body=b'{"status":200}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/workflows/{id}", get_status)
    app.router.add_get("/workflows/{id}/result", get_result)
    app.router.add_post("/workflows/run", post_run)
    app.router.add_post("/webhooks/", webhook)

    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        if command["cmd"] != "stats":
            raise ValueError(f"unknown command {command!r}")
        return {"webhooks": received[0], "rss": _settled_rss()}

    async with serve(app) as served:
        yield {"url": served.url, "floor": floor}, handle


# -- the load generator ------------------------------------------------------------------------
Request = tuple[str, str, bytes | None]  # method, path, body


@dataclasses.dataclass(slots=True)
class Load:
    """What one open-loop run saw; times are ``loop.time()``."""

    requests: int
    start: float = 0.0  # when the first request was due
    sent: list[float] = dataclasses.field(default_factory=list)  # when each actually left
    lags: list[float] = dataclasses.field(default_factory=list)  # sent - due
    answers: list[float] = dataclasses.field(default_factory=list)  # when each 2xx was read
    latencies: list[float] = dataclasses.field(default_factory=list)  # answered - sent, 2xx
    delays: list[float] = dataclasses.field(default_factory=list)  # answered - due, 2xx
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    wall: float = 0.0  # first due time to last answer
    cpu: float = 0.0  # this process's CPU seconds over the run

    @property
    def ok(self) -> int:
        return len(self.answers)

    @property
    def answered_rate(self) -> float:
        """2xx answers per second, first to last: the rate a server that keeps up answers at
        is the rate it is sent, one that falls behind answers at the rate it can."""
        if self.ok < 2:
            return 0.0
        return (self.ok - 1) / (max(self.answers) - min(self.answers))

    @property
    def send_rate(self) -> float:
        if len(self.sent) < 2:
            return 0.0
        return (len(self.sent) - 1) / (max(self.sent) - min(self.sent))


async def _one(
    http: aiohttp.ClientSession, request: tuple[str, URL, bytes | None], due: float, load: Load
) -> None:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    load.sent.append(sent)
    load.lags.append(sent - due)
    method, url, body = request
    headers = _JSON if body else None
    try:
        async with http.request(method, url, data=body, headers=headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        load.errors[type(exc).__name__] += 1
        return
    answered = loop.time()
    load.wall = max(load.wall, answered - load.start)
    if 200 <= status < 300:
        load.answers.append(answered)
        load.latencies.append(answered - sent)
        load.delays.append(answered - due)
    else:
        load.errors[f"HTTP {status}"] += 1


async def _drive(
    http: aiohttp.ClientSession, base: str, plan: Sequence[Request], rate: float
) -> Load:
    """Send ``plan`` open loop: request i is due at start + i / rate, whatever came back."""
    requests = [(method, URL(base + path), body) for method, path, body in plan]
    load = Load(len(requests))
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    cpu = time.process_time()
    load.start = loop.time() + 0.005
    for index, request in enumerate(requests):
        due = load.start + index / rate
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(_one(http, request, due, load)))
    await asyncio.gather(*tasks)
    load.cpu = time.process_time() - cpu
    return load


def _plan(
    rng: random.Random, count: int, held: Sequence[str], done: Sequence[str], cases: Sequence[str]
) -> list[Request]:
    kinds = rng.choices([kind for kind, _ in MIX], [share for _, share in MIX], k=count)
    plan: list[Request] = []
    for kind in kinds:
        if kind == "status":
            plan.append(("GET", f"/workflows/{rng.choice(held)}", None))
        elif kind == "result":
            plan.append(("GET", f"/workflows/{rng.choice(done)}/result", None))
        else:
            body = {"caseId": rng.choice(cases), "workflowDefinitionId": "cap-finish"}
            plan.append(("POST", "/workflows/run", json.dumps(body).encode()))
    return plan


def _client(token: str) -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=TIMEOUT)


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> str:
    """A set-up call; the ``id`` (or access token) it answered."""
    async with http.post(url, json=body) as response:
        if response.status // 100 != 2:
            raise RuntimeError(f"set-up call {url} answered {response.status}")
        answer: dict[str, Any] = await response.json()
        return str(answer.get("id") or answer["accessToken"])


async def _runs(
    http: aiohttp.ClientSession, base: str, cases: Sequence[str], count: int, definition: str
) -> list[str]:
    slots = asyncio.Semaphore(SETUP_AT_ONCE)

    async def one(case: str) -> str:
        async with slots:
            body = {"caseId": case, "workflowDefinitionId": definition}
            return await _post(http, f"{base}/workflows/run", body)

    return await asyncio.gather(*(one(cases[i % len(cases)]) for i in range(count)))


def _warmup(plan: list[Request]) -> list[Request]:
    return [request for request in plan if request[0] == "GET"][: round(WARMUP * RATE)]


async def _measure(child: Child, token: str, base: str, plan: list[Request]) -> tuple[Load, float]:
    """Warm up, then drive ``plan`` at RATE; the load seen and the server's CPU seconds."""
    async with _client(token) as http:
        await _drive(http, base, _warmup(plan), RATE)
        gc.collect()
        cpu = await child.cpu()
        gc.disable()  # the generator's own full collections stalled its schedule by ~25 ms
        try:
            load = await _drive(http, base, plan, RATE)
        finally:
            gc.enable()
        return load, await child.cpu() - cpu


def _lag_note(load: Load) -> str:
    lag, share = percentile(load.lags, 0.99), load.cpu / load.wall
    verdict = "kept up" if lag <= LAG_LIMIT else "LAGGED, so the figures understate the server"
    return f"send lag p99 {lag * 1e3:.1f} ms, its CPU {share:.0%} of a core: {verdict}"


def _errors(load: Load) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in load.errors.most_common()) or "none"


async def run(mode: Mode) -> Section:
    n, seconds = mode.sim_workflows, mode.sim_seconds
    section = Section(6, f"Simulator capacity: {n:,} workflows held, {RATE:,.0f} requests/s")
    async with await Child.start("bare", {"floor": n}) as bare:
        webhook_url = f"{bare.info['url']}/webhooks/"
        async with await Child.start("simcap", {"webhook_url": webhook_url}) as host:
            sim, base = host.info, host.info["base_url"]
            async with aiohttp.ClientSession(timeout=TIMEOUT) as anonymous:
                credentials = {"key": sim["key"], "secret": sim["secret"]}
                token = await _post(anonymous, f"{base}/auth/authorize", credentials)
            async with _client(token) as http:
                cases = [await _post(http, f"{base}/cases", {}) for _ in range(CASES)]
                done = await _runs(http, base, cases, DONE, "cap-done")
                warm = await host.ask("stats")
                began = time.perf_counter()
                held = await _runs(http, base, cases, n, "cap-hold")
                setup = time.perf_counter() - began
            loaded = await host.ask("stats")
            plan = _plan(random.Random(6), round(RATE * seconds), held, done, cases)
            bare_before = await bare.ask("stats")
            bare_load, bare_cpu = await _measure(bare, token, bare.info["url"], plan)
            bare_after = await bare.ask("stats")
            before = await host.ask("stats")
            load, sim_cpu = await _measure(host, token, base, plan)
            after = await host.ask("stats")
            received = int((await bare.ask("stats"))["webhooks"])

    rate, errors = load.answered_rate, sum(load.errors.values())
    kept = loaded["workflows"] - loaded["final"]  # in progress once set up
    per_workflow = (loaded["rss"] - warm["rss"]) / n
    finished = after["final"] - before["final"]
    delivered = after["webhooks_delivered"] - before["webhooks_delivered"]
    runs = sum(1 for method, _, _ in plan if method == "POST")
    pauses = after["gc_pauses"][len(before["gc_pauses"]) :]
    mib = 1 << 20
    logged = after["requests_logged"] - before["requests_logged"]  # the warm-up's too
    growth = (after["rss"] - before["rss"]) / logged
    served = len(_warmup(plan)) + bare_load.requests
    bare_growth = (bare_after["rss"] - bare_before["rss"]) / served
    section.rows += [
        Row("Simulator: 2xx answers per second, open loop", rate, "/s", "target", RATE,
            f">= {RATE:,.0f} req/s sustained", rate >= 0.99 * RATE,
            note=f"{load.ok:,} of {load.requests:,} answered 2xx in {load.wall:.2f} s; bare "
                 f"handler {bare_load.answered_rate:,.0f}/s; met within 1%, first to last answer"),
        Row("Simulator: errors (non-2xx or connection)", errors, "", "bare handler",
            sum(bare_load.errors.values()), "0 errors", errors == 0,
            note=f"Simulator: {_errors(load)}; bare handler: {_errors(bare_load)}"),
        Row("Simulator: latency p50", percentile(load.latencies, 0.5) * 1e3, "ms",
            "bare aiohttp handler", percentile(bare_load.latencies, 0.5) * 1e3),
        Row("Simulator: latency p99", percentile(load.latencies, 0.99) * 1e3, "ms",
            "bare aiohttp handler", percentile(bare_load.latencies, 0.99) * 1e3,
            note=f"max {max(load.latencies, default=0) * 1e3:.1f} ms (bare "
                 f"{max(bare_load.latencies, default=0) * 1e3:.1f}); from the due time p99 "
                 f"{percentile(load.delays, 0.99) * 1e3:.1f} ms (bare "
                 f"{percentile(bare_load.delays, 0.99) * 1e3:.1f}); Simulator full GCs during "
                 f"the load: {len(pauses)}, longest {max(pauses, default=0) * 1e3:.0f} ms"),
        Row("Simulator: CPU during the load, share of one core", sim_cpu / load.wall, "",
            "bare aiohttp handler", bare_cpu / bare_load.wall,
            note=f"{sim_cpu / load.requests * 1e6:.0f} us per request, "
                 f"bare {bare_cpu / bare_load.requests * 1e6:.0f} us"),
        Row(f"Simulator RSS, {kept:,} workflows held", loaded["rss"] / mib, "MiB",
            "idle Simulator", sim["rss"] / mib,
            note=f"after the load {after['rss'] / mib:.1f} MiB"),
        Row("Simulator RSS per workflow held", per_workflow, "B",
            "a dict of its 3 public fields", bare.info["floor"],
            note="includes the request-log record of its run call"),
        Row("Simulator RSS growth under load, per request served", growth, "B",
            "per workflow held", per_workflow,
            note=f"{logged:,} more records in its request log, "
                 f"{after['workflows'] - before['workflows']:,} more workflows; at "
                 f"{RATE:,.0f} req/s that is {growth * RATE * 3600 / 1e9:.1f} GB an hour; "
                 f"bare aiohttp handler {bare_growth:.0f} B per request"),
        Row("workflows held at the end of the load", after["workflows"], "",
            "held once set up", loaded["workflows"],
            note=f"{after['workflows'] - after['final']:,} in progress; "
                 f"{runs:,} runs during the load, of {FINISH:g} s each"),
        Row("webhooks delivered during the load", delivered, "",
            "workflows finished during the load", finished,
            note=f"in all (set-up too): {after['webhooks_delivered']:,} delivered, "
                 f"{received:,} counted by the receiver"),
        Row("load generator: requests sent per second", load.send_rate, "/s", "target", RATE,
            note=_lag_note(load)),
    ]  # fmt: skip
    section.notes.append(
        f"set-up (not load): {n:,} runs in {setup:.1f} s ({n / setup:,.0f}/s, "
        f"{SETUP_AT_ONCE} at once); mix {', '.join(f'{k} {s:.0%}' for k, s in MIX)} over "
        f"{CONNECTIONS} keep-alive connections; {WARMUP:g} s of warm-up reads per target."
    )
    if load.send_rate < 0.99 * RATE or percentile(load.lags, 0.99) > LAG_LIMIT:
        section.notes.append("the load generator lagged behind its schedule: see its row")
    return section
