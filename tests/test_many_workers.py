"""Many workers sharing one Redis: three worker processes (``tests/worker_process.py``) behind a
load balancer, a real redis-server, and the Simulator sending each webhook to a random worker.

What must hold: a webhook landing on any worker resolves the waiter on every other worker
through Redis, with zero polls; each event is dispatched once per process and an
``on_event(once=True)`` hook runs once in the whole cluster; with Redis stopped every wait still
finishes (by polling) and the bus takes over again when Redis returns; a worker killed with
SIGKILL and restarted finishes the workflows it had started with ``wait(id)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from eventually import eventually
from redis_server import RedisServer

from workflows_async.testing import Simulator, WorkflowDefinition, serve
from workflows_async.webhooks import SIGNATURE_HEADER

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker_process.py"
EXAMPLE = HERE.parent / "examples" / "many_workers.py"

TIME_SCALE = 0.02  # kyc-basic ends 10 ms after its run; webhook retries come 0.1 s apart
# (webhook_timeout=250 below: the Simulator waits 5 s for an answer before it retries)
MANUAL = "manual"  # never ends by itself: the test ends it with sim.complete()
POLL_ROUTE = "GET /workflows/{id}"
READY = re.compile(rb"^\S+ ready on (\d+);", re.MULTILINE)  # a worker serves, on port 0

State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Forward:
    """One webhook POST the balancer passed to one worker."""

    target: int
    event_id: str
    workflow_id: str
    status: str
    answer: int  # the worker's HTTP status; 0 when it could not be reached


class Balancer:
    """A tiny load balancer in front of the workers' ``/webhooks/``.

    Each POST (raw body and signature header, untouched) goes to a random worker, or to the next
    one when a worker cannot be reached; the worker's answer is relayed. ``duplicate`` sends
    every POST to two workers at once; ``first_choice`` picks the worker that gets the first
    delivery attempt of a workflow's event (its retries are spread at random again).
    """

    def __init__(self, targets: list[str], *, seed: int) -> None:
        self.targets = targets
        self.duplicate = False
        self.first_choice: Callable[[str], int] | None = None
        self.forwards: list[Forward] = []
        self._routed: set[str] = set()
        self._rng = random.Random(seed)
        self._http: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self.handle)
        app.cleanup_ctx.append(self._client)
        return app

    async def _client(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            self._http = http
            yield

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {
            name: value
            for name in ("Content-Type", SIGNATURE_HEADER)
            if (value := request.headers.get(name)) is not None
        }
        event = json.loads(body)
        order = self._rng.sample(range(len(self.targets)), len(self.targets))
        if self.first_choice is not None and event["eventId"] not in self._routed:
            first = self.first_choice(event["workflowId"])
            order.remove(first)
            order.insert(0, first)
        self._routed.add(event["eventId"])
        if self.duplicate:
            answers = await asyncio.gather(
                *(self._forward(i, body, headers, event) for i in order[:2])
            )
            ok = [a for a in answers if 200 <= a < 300]
            answer = ok[0] if ok else answers[0]
        else:
            answer = 0
            for target in order:
                answer = await self._forward(target, body, headers, event)
                if answer:
                    break
        return web.Response(status=answer or 502)

    async def _forward(
        self, target: int, body: bytes, headers: dict[str, str], event: dict[str, Any]
    ) -> int:
        assert self._http is not None
        try:
            async with self._http.post(self.targets[target], data=body, headers=headers) as reply:
                await reply.read()
                answer = reply.status
        except aiohttp.ClientConnectionError:
            answer = 0
        self.forwards.append(
            Forward(target, event["eventId"], event["workflowId"], event["status"], answer)
        )
        return answer


@dataclasses.dataclass
class WorkerProcess:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0  # the one its current process reported (it listens on port 0)
    launched_at: int = dataclasses.field(default=0, init=False)  # log length at the launch

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reported_port(self) -> bool:
        """Whether the current process printed its ready line (and so ``port``); fails at once
        if it exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited early\n{self.tail()}")
        with self.log.open("rb") as log:
            log.seek(self.launched_at)
            found = READY.search(log.read())
        if found is not None:
            self.port = int(found.group(1))
        return found is not None

    def launch(self) -> None:
        self.port = 0
        self.launched_at = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own program, fixed argv
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- {self.name} ---\n" + "\n".join(text[-lines:])


@dataclasses.dataclass
class Cluster:
    sim: Simulator
    balancer: Balancer
    workers: list[WorkerProcess]
    http: aiohttp.ClientSession

    async def state(self, index: int) -> State:
        async with self.http.get(f"{self.workers[index].url}/state") as reply:
            reply.raise_for_status()
            state: State = await reply.json()
            return state

    async def states(self) -> list[State]:
        return list(await asyncio.gather(*(self.state(i) for i in range(len(self.workers)))))

    async def post(self, index: int, path: str, **params: str | int) -> State:
        query = {name: str(value) for name, value in params.items()}
        url = f"{self.workers[index].url}{path}"
        async with self.http.post(url, params=query) as reply:
            reply.raise_for_status()
            answer: State = await reply.json()
            return answer

    async def until(
        self, check: Callable[[list[State]], bool], what: str, timeout: float = 30.0
    ) -> list[State]:
        """Poll every worker's state until ``check`` holds; fail with the logs at the deadline."""
        last: list[State] = []
        error: BaseException | None = None

        async def holds() -> bool:
            nonlocal last, error
            try:
                last = await self.states()
            except (aiohttp.ClientError, OSError) as exc:
                error = exc  # a worker that is (re)starting
                return False
            return check(last)

        try:
            await eventually(holds, what, timeout=timeout, interval=0.05)
        except AssertionError as exc:
            summary = [
                {k: w[k] for k in ("name", "pending", "dispatched", "duplicates", "bus")}
                | {"results": len(w["results"])}
                for w in last
            ]
            logs = "\n".join(w.tail() for w in self.workers)
            raise AssertionError(
                f"{exc}\nstates: {summary}\nlast error: {error!r}\n{logs}"
            ) from None
        return last

    async def ready(self, index: int) -> None:
        """Wait until the worker's current process serves and said on which port; the balancer
        sends to that port from then on."""
        worker = self.workers[index]
        try:
            await eventually(worker.reported_port, f"{worker.name} ready", timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{worker.tail()}") from None
        self.balancer.targets[index] = f"{worker.url}/webhooks/"

    def polls(self, workflow_id: str | None = None, *, since: int = 0) -> int:
        """Polls the Simulator saw (of one workflow, when given), from request ``since`` on."""
        path = None if workflow_id is None else f"/workflows/{workflow_id}"
        return sum(
            1
            for record in self.sim.requests[since:]
            if record.route == POLL_ROUTE and (path is None or record.path == path)
        )

    async def check_each_event_dispatched_once_per_process(self) -> list[State]:
        """Every event was published once and reached every process once; copies were
        acknowledged without publishing (counted as claimed duplicates); the once-hook ran once
        per event in the whole cluster."""
        await self.sim.wait_idle(timeout=30)
        accepted = [f for f in self.balancer.forwards if f.answer == 200]
        events = {f.event_id for f in accepted}
        assert events
        states = await self.until(
            lambda s: (
                all(w["bus"]["delivered"] == len(events) for w in s)
                and sum(sum(w["hooks"].values()) for w in s) >= len(events)
            ),
            "every published event reached every worker and its hook ran",
        )
        for w in states:
            assert w["dispatched"] == len(events), w["name"]
            assert w["duplicates"] == 0, w["name"]  # no copy was published
        assert sum(w["claimed_duplicates"] for w in states) == len(accepted) - len(events)
        hook_runs: Counter[str] = Counter()
        for w in states:
            hook_runs.update(w["hooks"])
        assert hook_runs == Counter({f"id:{event_id}": 1 for event_id in events})
        return states


@asynccontextmanager
async def cluster(
    redis: RedisServer, tmp_path: Path, *, size: int = 3, **options: float
) -> AsyncIterator[Cluster]:
    async with Simulator(time_scale=TIME_SCALE, seed=5, webhook_timeout=250) as sim:
        sim.define(MANUAL, WorkflowDefinition(("IN_PROGRESS", "COMPLETED"), duration=1e9))
        balancer = Balancer([""] * size, seed=5)  # each target set once its worker is ready
        workers = []
        for index in range(size):
            name = f"worker-{index}"
            argv = [sys.executable, str(WORKER), "--redis", redis.url, "--api", sim.base_url]
            argv += ["--name", name, "--key", sim.key, "--secret", sim.secret]
            argv += ["--journal", str(tmp_path / f"{name}.journal")]
            for option, value in options.items():
                argv += [f"--{option.replace('_', '-')}", str(value)]
            workers.append(WorkerProcess(name, argv, tmp_path / f"{name}.log"))
        async with serve(balancer.app()) as front:
            sim.add_webhook_url(f"{front.url}/")
            try:
                for worker in workers:
                    worker.launch()
                async with aiohttp.ClientSession() as http:
                    c = Cluster(sim, balancer, workers, http)
                    await asyncio.gather(*(c.ready(i) for i in range(size)))
                    yield c
            finally:
                await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))


def results(states: list[State], batch: str | None = None) -> dict[str, State]:
    """Every recorded wait by workflow id (one batch, when given); a repeat fails the test."""
    found: dict[str, State] = {}
    for w in states:
        for result in w["results"]:
            if batch is None or result["batch"] == batch:
                assert result["workflow_id"] not in found, f"resolved twice: {result}"
                found[result["workflow_id"]] = result
    return found


def owners(sim: Simulator, cases: dict[str, int]) -> dict[str, int]:
    """Which worker started each workflow (every worker made its own case)."""
    return {wid: cases[info.case_id] for wid, info in sim.workflows.items()}


async def test_webhooks_to_any_worker_resolve_waiters_on_every_worker_with_zero_polls(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    per_worker = 8
    async with cluster(redis_server, tmp_path, initial_delay=5.0) as c:
        for i in range(3):
            await c.post(i, "/run", count=per_worker, batch="main")
        states = await c.until(
            lambda s: all(len(w["results"]) == per_worker for w in s), "every waiter finished"
        )
        done = results(states)
        assert len(done) == 3 * per_worker
        for result in done.values():
            assert (result["status"], result["channel"]) == ("COMPLETED", "webhook"), result
        assert c.polls() == 0

        # Webhooks landed on a worker other than the waiting one, and still resolved it. (The
        # balancer records a forward once the worker's answer is back, which can be after the
        # waiter, woken through Redis, already reported its result.)
        def landed_all(_: list[State]) -> bool:
            answered = {f.workflow_id for f in c.balancer.forwards if f.answer == 200}
            return answered >= done.keys()

        await c.until(landed_all, "the balancer recorded every answered webhook")
        landed = {f.workflow_id: f.target for f in c.balancer.forwards if f.answer == 200}
        crossed = [r for r in done.values() if f"worker-{landed[r['workflow_id']]}" != r["worker"]]
        assert crossed
        states = await c.check_each_event_dispatched_once_per_process()
        assert all(w["claimed_duplicates"] == 0 for w in states)  # no copies were sent
        assert all(w["pending"] == [] for w in states)


async def test_one_event_posted_to_two_workers_dispatches_once_per_process(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with cluster(redis_server, tmp_path, initial_delay=5.0) as c:
        c.balancer.duplicate = True
        for i in range(3):
            await c.post(i, "/run", count=4, batch="dup")
        states = await c.until(lambda s: all(len(w["results"]) == 4 for w in s), "waiters done")
        done = results(states)  # each waiter resolved exactly once
        assert len(done) == 12
        assert all(r["channel"] == "webhook" for r in done.values())
        states = await c.check_each_event_dispatched_once_per_process()
        # Every event came twice: one copy published, the other acknowledged as a duplicate, or
        # refused with 503 while the first was still being published.
        copies = sum(w["claimed_duplicates"] + w["deferred_duplicates"] for w in states)
        assert copies >= 12
        assert c.polls() == 0


async def test_redis_outage_waits_finish_by_polling_and_the_bus_returns(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with cluster(redis_server, tmp_path, initial_delay=2.0, max_interval=2.0) as c:
        cases = {}
        for i in range(3):
            cases[
                (await c.post(i, "/run", count=4, definition=MANUAL, batch="outage"))["case_id"]
            ] = i
        await c.until(lambda s: sum(len(w["pending"]) for w in s) == 12, "12 waiters registered")

        await asyncio.to_thread(redis_server.stop)
        await c.until(lambda s: not any(w["bus"]["healthy"] for w in s), "Redis seen gone")
        owner = owners(c.sim, cases)
        ids = list(owner)
        lost, announced = ids[:4], ids[4:]
        c.sim.faults.drop_webhooks = 1.0
        for workflow_id in lost:
            await c.sim.complete(workflow_id)
        c.sim.faults.drop_webhooks = 0.0
        # Each event's first try goes to a worker that does not wait for it: it cannot publish
        # and nobody there needs the event, so it answers 503 and the platform retries.
        c.balancer.first_choice = lambda wid: (owner[wid] + 1) % 3
        mark = len(c.balancer.forwards)
        await asyncio.gather(*(c.sim.complete(wid) for wid in announced))
        c.balancer.first_choice = None

        states = await c.until(lambda s: all(len(w["results"]) == 4 for w in s), "waits done")
        done = results(states, "outage")
        assert set(done) == set(ids)
        assert all(r["status"] == "COMPLETED" for r in done.values())
        assert all(done[wid]["channel"] == "poll" for wid in lost)
        outage_forwards = c.balancer.forwards[mark:]
        first_tries: dict[str, Forward] = {}
        for forward in outage_forwards:
            first_tries.setdefault(forward.workflow_id, forward)
        assert all(f.answer == 503 for f in first_tries.values())
        # The retries went anywhere: a 2xx came only from the worker whose waiter needed it.
        accepted = [f for f in outage_forwards if f.answer == 200]
        assert accepted
        for forward in accepted:
            assert forward.target == owner[forward.workflow_id]
            assert done[forward.workflow_id]["channel"] == "webhook"

        await asyncio.to_thread(redis_server.start)
        states = await c.until(lambda s: all(w["bus"]["healthy"] for w in s), "re-subscribed")
        assert all(w["bus"]["reconnects"] >= 1 for w in states)
        mark = len(c.sim.requests)
        for i in range(3):
            await c.post(i, "/run", count=3, batch="after")
        states = await c.until(
            lambda s: sum(len(w["results"]) for w in s) == 21, "waits after the outage done"
        )
        after = results(states, "after")
        assert len(after) == 9
        assert all(r["channel"] == "webhook" for r in after.values())
        assert all(c.polls(wid, since=mark) == 0 for wid in after)


async def test_killed_worker_restarted_finishes_its_workflows_with_wait(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with cluster(redis_server, tmp_path, initial_delay=5.0) as c:
        ids = (await c.post(0, "/start", count=3, definition=MANUAL, batch="first"))["ids"]
        journal = tmp_path / "worker-0.journal"
        assert journal.read_text().split() == [w for wid in ids for w in ("started", wid)]
        await c.until(lambda s: set(ids) <= set(s[0]["pending"]), "worker-0 waits")

        c.workers[0].kill()
        by_webhook, by_poll, later = ids
        mark = len(c.balancer.forwards)
        await c.sim.complete(by_webhook)  # lands on a live worker; Redis keeps the end
        assert any(f.answer == 200 for f in c.balancer.forwards[mark:])
        c.sim.faults.drop_webhooks = 1.0
        await c.sim.complete(by_poll)  # nobody hears of this one
        c.sim.faults.drop_webhooks = 0.0

        restart = len(c.sim.requests)
        c.workers[0].launch()
        await c.ready(0)
        states = await c.until(
            lambda s: len(s[0]["results"]) == 2 and s[0]["pending"] == [later],
            "the restarted worker resumed all three",
        )
        done = results(states)
        assert done[by_webhook]["channel"] == "webhook"
        assert c.polls(by_webhook, since=restart) == 0  # found in Redis, never polled
        assert done[by_poll]["channel"] == "poll"
        assert all(r["batch"] == "resumed" for r in done.values())

        # wait(id) polls once at once; after that poll the webhook is the faster way.
        await c.until(lambda s: c.polls(later, since=restart) >= 1, "first poll of the last one")
        await c.sim.complete(later)
        states = await c.until(lambda s: len(s[0]["results"]) == 3, "the last one done")
        last = results(states)[later]
        assert (last["status"], last["channel"]) == ("COMPLETED", "webhook")
        assert journal.read_text().split().count("done") == 3


def test_the_example_demo_runs() -> None:
    finished = subprocess.run(  # noqa: S603 - our own example, fixed argv
        [sys.executable, str(EXAMPLE), "--demo", "--spawn-redis"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "Traceback" not in finished.stderr
    assert "6 of 6 workflows completed" in finished.stdout
