"""session.wait() on the lean engine: the caller's task awaits the engine's future itself, the
deadline is an item of a shared timer wheel, lookups of a network bus run in one batch task. Same
promises as before: one deadline (WorkflowTimeout with the id), nothing left behind, early
events, terminal is final, workflow_id on every error."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from eventually import eventually

import workflows_async as wa
from workflows_async._deadlines import Deadlines
from workflows_async.bus import InMemoryBus
from workflows_async.engine import WaitEngine
from workflows_async.statuses import StatusSet


def session() -> wa.Session:
    return wa.Session(
        "http://127.0.0.1:9",
        wa.TokenAuth("unused"),
        allow_insecure_http=True,
        verify_webhooks=False,  # local only: deliver() posts unsigned events
    )


def quiet(s: wa.Session) -> None:
    """No poll is ever due (as during a long 429 pause): no HTTP happens."""
    s._waiting.scheduler.schedule.paused_until = float("inf")


def event(wid: str, status: str = "COMPLETED", event_id: str = "e-1") -> wa.WebhookEvent:
    return wa.WebhookEvent(workflow_id=wid, status=status, event_id=event_id)


async def deliver(s: wa.Session, wid: str, status: str) -> bool:
    """The event arrives as a webhook at the Session's receiver; True once it was taken."""
    body = json.dumps({"workflowId": wid, "status": status, "eventId": "e-1"}).encode()
    answer = await s.webhook_core().receive("POST", {"Content-Type": "application/json"}, body)
    return answer.status == 200


def left_behind(s: wa.Session) -> tuple[int, int, int, list[str]]:
    stats = s.stats()
    return (stats.waits.pending, stats.polls.scheduled, len(s._deadlines), s.pending())


async def test_the_deadline_raises_workflow_timeout_with_the_id() -> None:
    async with session() as s:
        quiet(s)
        with pytest.raises(wa.WorkflowTimeout) as caught:
            async with asyncio.timeout(30):
                await s.wait("wf-1", timeout=0.05)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.workflow_id == "wf-1" and "wf-1" in str(caught.value)
        assert left_behind(s) == (0, 0, 0, [])
        assert s.stats().waits.timed_out == 1 and s.stats().waits.pending == 0


async def test_each_wait_has_its_own_deadline() -> None:
    async with session() as s:
        quiet(s)
        short = asyncio.create_task(s.wait("wf-1", timeout=0.05))
        long = asyncio.create_task(s.wait("wf-1", timeout=30))
        with pytest.raises(wa.WorkflowTimeout):
            await asyncio.wait_for(short, 30)
        assert not long.done()
        assert await deliver(s, "wf-1", "FAILED")
        with pytest.raises(wa.WorkflowFailed) as caught:
            await asyncio.wait_for(long, 30)
        assert caught.value.workflow_id == "wf-1"
        assert left_behind(s) == (0, 0, 0, [])


async def test_cancelled_waits_leave_nothing_behind() -> None:
    async with session() as s:
        quiet(s)
        tasks = [asyncio.create_task(s.wait(f"wf-{i}", timeout=3600)) for i in range(300)]
        await eventually(lambda: len(s.pending()) >= 300, "300 waits registered", timeout=30)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert left_behind(s) == (0, 0, 0, [])
        assert s._deadlines._items <= 64  # finished waits do not pile up in the wheel
        assert s.stats().waits.cancelled == 300


async def test_an_event_before_the_wait_and_a_remembered_one_resolve_at_once() -> None:
    async with session() as s:
        quiet(s)
        await s.start()
        assert await deliver(s, "wf-1", "FAILED")  # nobody waits yet
        with pytest.raises(wa.WorkflowFailed) as caught:
            await asyncio.wait_for(s.wait("wf-1"), 30)  # from the early-event buffer
        assert caught.value.workflow_id == "wf-1"
        with pytest.raises(wa.WorkflowFailed):
            await asyncio.wait_for(s.wait("wf-1"), 30)  # the bus remembers it
        assert left_behind(s) == (0, 0, 0, [])


async def test_closing_fails_pending_waits_with_their_id() -> None:
    s = session()
    quiet(s)
    task = asyncio.create_task(s.wait("wf-1", timeout=3600))
    await eventually(lambda: "wf-1" in s.pending(), "the wait registered", timeout=30)
    await s.close()
    with pytest.raises(wa.SessionClosedError) as caught:
        await asyncio.wait_for(task, 30)
    assert caught.value.workflow_id == "wf-1"
    with pytest.raises(wa.SessionClosedError) as again:
        await s.wait("wf-2")
    assert again.value.workflow_id == "wf-2"


class NetworkBus(InMemoryBus):
    """A bus that answers lookups only over "the network" (no synchronous lookup)."""

    last_terminal_now = None  # type: ignore[assignment]

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.lookups: list[list[str]] = []
        self.fail = fail

    async def last_terminal(self, workflow_ids: list[str]) -> list[wa.WebhookEvent]:
        self.lookups.append(list(workflow_ids))
        await asyncio.sleep(0.01)
        if self.fail:
            raise ConnectionResetError("the bus is down")
        return InMemoryBus.last_terminal_now(self, workflow_ids)


async def test_a_network_bus_is_asked_in_batches_by_one_task() -> None:
    bus = NetworkBus()
    await bus.publish(event("wf-0", "COMPLETED"), terminal=True)  # remembered from before
    polled: list[str] = []

    async def poll(wid: str) -> wa.Workflow:
        polled.append(wid)
        return wa.Workflow(id=wid, case_id="c", status="COMPLETED")

    waiting = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=poll)
    try:
        async with asyncio.timeout(30):
            done = await asyncio.gather(
                *(waiting.completion(f"wf-{i}", first_poll=0) for i in range(50))
            )
        assert done[0].channel is wa.Channel.WEBHOOK
        assert all(c.channel is wa.Channel.POLL for c in done[1:])
        assert "wf-0" not in polled  # the remembered event spared its poll
        assert len(bus.lookups) < 50 and sum(map(len, bus.lookups)) == 50
        assert (len(waiting.registry), len(waiting.scheduler)) == (0, 0)
    finally:
        await waiting.close()


async def test_a_failing_network_lookup_leaves_the_waits_to_polling() -> None:
    async def poll(wid: str) -> wa.Workflow:
        return wa.Workflow(id=wid, case_id="c", status="COMPLETED")

    waiting = WaitEngine(
        statuses=StatusSet(), policy=wa.PollPolicy(), bus=NetworkBus(fail=True), poll=poll
    )
    try:
        async with asyncio.timeout(30):
            completion = await waiting.completion("wf-1", first_poll=0)
        assert completion.channel is wa.Channel.POLL
    finally:
        await waiting.close()


async def test_every_bus_gets_the_engine_catch_up_unless_it_has_one() -> None:
    """``on_reconnect`` is part of the Bus protocol: after a gap the engine looks up what its
    waiters missed; a hook the user gave the bus stays."""

    async def never(wid: str) -> wa.Workflow:
        raise AssertionError("no poll expected")

    bus = NetworkBus()
    assert bus.on_reconnect is None
    waiting = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never)
    try:
        assert bus.on_reconnect == waiting.recheck
        future = waiting.enter("wf-1", first_poll=3600)
        await bus.publish(event("wf-1", "COMPLETED"), terminal=True)  # missed: nobody attached
        assert not future.done()
        await bus.on_reconnect()  # what a bus does once delivery is back
        assert (await asyncio.wait_for(future, 30)).channel is wa.Channel.WEBHOOK
        waiting.leave("wf-1", future)
    finally:
        await waiting.close()

    async def own() -> None:
        pass

    mine = InMemoryBus()
    mine.on_reconnect = own
    WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=mine, poll=never)
    assert mine.on_reconnect is own


async def test_a_bus_without_on_reconnect_is_a_configuration_error() -> None:
    """A bus written for the older protocol (no ``on_reconnect``) is refused with our typed
    error, naming what to add, when the Session is made; never a bare AttributeError."""

    class OldBus:
        healthy = True

        def __getattr__(self, name: str) -> object:
            if name == "on_reconnect":
                raise AttributeError(name)
            return getattr(InMemoryBus(), name)

    with pytest.raises(wa.ConfigurationError, match="on_reconnect"):
        wa.Session("https://api.example.test", bus=OldBus())  # type: ignore[arg-type]


class _Item:
    """A wait as the deadline wheel sees it."""

    def __init__(self, name: str, fired: list[tuple[str, float]], when: float = 0.0) -> None:
        self.name, self.fired, self.ended, self.when = name, fired, False, when

    def over(self) -> bool:
        return self.ended

    def expire(self) -> None:
        if not self.ended:
            self.fired.append((self.name, asyncio.get_running_loop().time()))


async def test_deadlines_fire_in_order_never_early_and_skip_finished_waits() -> None:
    fired: list[tuple[str, float]] = []
    deadlines = Deadlines()
    late, early, done = _Item("late", fired), _Item("early", fired), _Item("done", fired)
    late.when = deadlines.add(late, 0.2)
    early.when = deadlines.add(early, 0.01)
    done.when = deadlines.add(done, 0.02)
    done.ended = True
    deadlines.finished()
    assert len(deadlines) == 2
    async with asyncio.timeout(30):
        while len(fired) < 2:
            await asyncio.sleep(0.01)
    assert [name for name, _ in fired] == ["early", "late"]
    assert fired[0][1] >= early.when and fired[1][1] >= late.when  # never early
    deadlines.close()


async def test_deadlines_share_buckets_and_drop_finished_items() -> None:
    fired: list[tuple[str, float]] = []
    deadlines = Deadlines()
    items = [_Item(str(n), fired) for n in range(1000)]
    for item in items:  # registered within a few ms: a handful of buckets, not 1000
        deadlines.add(item, 3600)
    assert len(deadlines._buckets) < 50
    for item in items[:990]:
        item.ended = True
        deadlines.finished()
    assert len(deadlines) == 10 and deadlines._items <= 2 * 10 + 64  # compacted
    forever = _Item("forever", fired)
    deadlines.add(forever, math.inf)  # never expires, and holds no bucket
    assert len(deadlines) == 11 and deadlines._items <= 2 * 10 + 64
    deadlines.close()
    assert fired == []


@pytest.mark.parametrize(
    ("length", "status"),
    [
        ("²", 200),  # str.isdigit() says yes, int() says no: not a length, the body decides
        ("٣", 200),  # Arabic-Indic three: a digit, not an ASCII one
        (" 12 ", 200),
        ("9" * 5000, 413),  # more digits than int() parses by default: too large, not a crash
        ("99999999999999999999", 413),
    ],
)
async def test_an_odd_content_length_gets_a_4xx_or_the_body_decides(
    length: str, status: int
) -> None:
    """A server that lets an odd Content-Length through must not make the receiver fail (a
    crash here became a 503, and the platform retried it forever)."""
    async with session() as s:
        quiet(s)
        body = json.dumps({"workflowId": "wf-1", "status": "COMPLETED", "eventId": "e-1"})
        headers = {"Content-Type": "application/json", "Content-Length": length}
        answer = await s.webhook_core().receive("POST", headers, body.encode())
        assert answer.status == status
