"""The poll schedule (pure) and the one scheduler task, driven by a fake poll function."""

from __future__ import annotations

import asyncio

import pytest
from eventually import eventually

import workflows_async as wa
from workflows_async._poll_schedule import PollSchedule
from workflows_async.polling import PollScheduler
from workflows_async.statuses import StatusSet


def test_interval_grows_to_the_cap_with_bounded_jitter() -> None:
    policy = wa.PollPolicy(initial_delay=2, multiplier=2, max_interval=30, jitter=0.2)
    assert policy.interval(0, 0.5) == 2
    assert policy.interval(1, 0.5) == 4
    assert policy.interval(3, 0.5) == 16
    assert policy.interval(10, 0.5) == 30
    assert policy.interval(10, 0.0) == pytest.approx(24)
    assert policy.interval(10, 0.999999) == pytest.approx(36, rel=1e-4)
    assert policy.interval(1, 0.5, stretched=True) == 16


def test_polls_grow_logarithmically_with_duration() -> None:
    policy = wa.PollPolicy(initial_delay=5, multiplier=2, max_interval=600)

    def polls_until(duration: float) -> int:
        elapsed, polls = 0.0, 0
        while elapsed < duration:
            elapsed += policy.interval(polls)
            polls += 1
        return polls

    assert polls_until(5) == 1
    assert polls_until(60) <= 5
    assert polls_until(600) <= 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay": -1},
        {"multiplier": 0.5},
        {"jitter": 1.0},
        {"rate": 0},
        {"max_in_flight": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(wa.ConfigurationError):
        wa.PollPolicy(**kwargs)  # type: ignore[arg-type]


class FakeAPI:
    def __init__(self, finish_after: int = 2) -> None:
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.finish_after = finish_after
        self.rate_limit_next = 0
        self.retry_after = 0.2

    async def poll(self, workflow_id: str) -> wa.Workflow:
        self.calls[workflow_id] = self.calls.get(workflow_id, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)
            if self.rate_limit_next:
                self.rate_limit_next -= 1
                raise wa.RateLimitError(429, method="GET", path="/w", retry_after=self.retry_after)
            done = self.calls[workflow_id] >= self.finish_after
            return wa.Workflow(id=workflow_id, status="COMPLETED" if done else "IN_PROGRESS")
        finally:
            self.in_flight -= 1


def make(api: FakeAPI, policy: wa.PollPolicy, finished: list[wa.Workflow]) -> PollScheduler:
    return PollScheduler(
        policy,
        api.poll,
        StatusSet().is_terminal,
        lambda wid, workflow: finished.append(workflow),
        lambda wid, exc: None,
    )


async def test_many_waiters_share_one_budget() -> None:
    api = FakeAPI(finish_after=2)
    finished: list[wa.Workflow] = []
    policy = wa.PollPolicy(initial_delay=0.01, max_interval=0.02, rate=500, max_in_flight=4)
    scheduler = make(api, policy, finished)
    scheduler.start()
    for i in range(200):
        scheduler.add(f"w{i}")
    await eventually(lambda: len(finished) >= 200, "200 waiters finished")
    await scheduler.close()
    assert api.max_in_flight <= 4
    assert all(count == 2 for count in api.calls.values())
    assert len(scheduler) == 0


async def test_removed_waiters_are_not_polled() -> None:
    api = FakeAPI()
    scheduler = make(api, wa.PollPolicy(initial_delay=0.05), [])
    scheduler.start()
    scheduler.add("gone")
    scheduler.remove("gone")
    await asyncio.sleep(0.15)
    await scheduler.close()
    assert api.calls == {}


async def test_429_slows_everyone_down() -> None:
    api = FakeAPI(finish_after=1)
    api.rate_limit_next, api.retry_after = 1, 0.6
    finished: list[wa.Workflow] = []
    policy = wa.PollPolicy(initial_delay=0.0, max_interval=1.0, rate=100, max_in_flight=1)
    scheduler = make(api, policy, finished)
    scheduler.start()
    scheduler.add("a", delay=0)
    await eventually(
        lambda: scheduler.recorder.snapshot().polls.rate_limited, "a 429", interval=0.005
    )
    assert scheduler.current_rate == 50
    scheduler.add("b", delay=0)
    await asyncio.sleep(0.1)
    assert "b" not in api.calls  # paused by the Retry-After for everyone
    await eventually(lambda: len(finished) >= 2, "both waiters finished")
    await scheduler.close()


def test_webhooks_stretch_the_schedule() -> None:
    policy = wa.PollPolicy(initial_delay=1.0, webhook_stretch=4, jitter=0)
    schedule = PollSchedule(policy)
    schedule.add("before", 0.0)
    assert schedule.due("before") == 1.0
    schedule.note_webhook(0.0)
    schedule.add("after", 0.0)
    assert schedule.due("after") == 4.0


async def test_stretched_entries_come_back_when_webhooks_stop() -> None:
    healthy = True
    policy = wa.PollPolicy(initial_delay=0.2, webhook_stretch=50, jitter=0)
    api = FakeAPI(finish_after=1)
    finished: list[wa.Workflow] = []
    scheduler = PollScheduler(
        policy,
        api.poll,
        StatusSet().is_terminal,
        lambda wid, workflow: finished.append(workflow),
        lambda wid, exc: None,
        stretch_allowed=lambda: healthy,
    )
    scheduler.start()
    scheduler.note_webhook()
    scheduler.add("w")  # due in 10 s while webhooks flow
    await asyncio.sleep(0.05)
    healthy = False  # the bus went down
    await eventually(lambda: finished, "the waiter finished", interval=0.05)
    await scheduler.close()
    assert api.calls == {"w": 1}


def test_interval_never_overflows() -> None:
    policy = wa.PollPolicy(initial_delay=5, multiplier=2, max_interval=60, jitter=0)
    assert policy.interval(5000) == 60


async def test_heap_changes_while_waiting_for_a_slot_lose_no_workflow() -> None:
    gate = asyncio.Event()
    polled: list[str] = []

    async def poll(wid: str) -> wa.Workflow:
        polled.append(wid)
        if wid == "slow":
            await gate.wait()
        return wa.Workflow(id=wid, status="COMPLETED")

    done: list[wa.Workflow] = []
    policy = wa.PollPolicy(rate=1000, max_in_flight=1)
    scheduler = PollScheduler(
        policy,
        poll,
        StatusSet().is_terminal,
        lambda wid, workflow: done.append(workflow),
        lambda wid, exc: None,
    )
    scheduler.start()
    scheduler.add("slow", delay=0)  # holds the only slot
    await asyncio.sleep(0.05)
    scheduler.add("A", delay=0)  # due: the scheduler waits for a slot with A on top
    for i in range(100):
        scheduler.add(f"z{i}", delay=100)
    await asyncio.sleep(0.05)
    scheduler.remove("A")
    for i in range(80):
        scheduler.remove(f"z{i}")  # compacts the heap
    scheduler.add("B", delay=0.2)
    gate.set()
    await eventually(lambda: len(done) >= 2, "two polls done", interval=0.02)
    await scheduler.close()
    assert [wid for wid in polled if not wid.startswith("z")] == ["slow", "B"]
    assert {w.id for w in done} == {"slow", "B"}


async def test_polls_that_cannot_succeed_fail_the_waiters() -> None:
    errors: list[tuple[str, BaseException]] = []

    async def poll(wid: str) -> wa.Workflow:
        # Refused credentials (a plain 401 after a renewal is transient: see test_engine_faults).
        raise wa.CredentialsError(401, method="POST", path="/auth/authorize")

    scheduler = PollScheduler(
        wa.PollPolicy(initial_delay=0),
        poll,
        StatusSet().is_terminal,
        lambda wid, workflow: None,
        lambda wid, exc: errors.append((wid, exc)),
    )
    scheduler.start()
    scheduler.add("w", delay=0)
    await eventually(lambda: errors, "the waiter failed")
    await scheduler.close()
    assert errors[0][0] == "w" and isinstance(errors[0][1], wa.CredentialsError)
    assert len(scheduler) == 0


def test_initial_delay_zero_still_backs_off() -> None:
    policy = wa.PollPolicy(initial_delay=0, multiplier=2, max_interval=60, jitter=0)
    assert policy.interval(0) == 0
    assert [policy.interval(n) for n in range(1, 5)] == [0.2, 0.4, 0.8, 1.6]


async def test_a_huge_retry_after_pauses_polling_for_max_interval_at_most() -> None:
    api = FakeAPI(finish_after=2)
    finished: list[wa.Workflow] = []

    async def poll(wid: str) -> wa.Workflow:
        if not api.calls:
            api.calls[wid] = 1
            raise wa.RateLimitError(429, method="GET", path="/w", retry_after=86400)
        return await api.poll(wid)

    policy = wa.PollPolicy(initial_delay=0, max_interval=0.3, jitter=0)
    scheduler = make(api, policy, finished)
    scheduler._poll = poll
    scheduler.start()
    scheduler.add("w", delay=0)
    await eventually(lambda: finished, "the waiter finished", interval=0.05)
    await scheduler.close()
    assert scheduler.recorder.snapshot().polls.rate_limited == 1


async def test_a_poll_answer_with_another_spelling_of_the_id_resolves_the_waiter() -> None:
    from workflows_async.bus import InMemoryBus
    from workflows_async.engine import WaitEngine

    async def poll(wid: str) -> wa.Workflow:
        return wa.Workflow(id=wid.upper(), status="COMPLETED")

    waiting = WaitEngine(
        statuses=StatusSet(),
        policy=wa.PollPolicy(initial_delay=0),
        bus=InMemoryBus(),
        poll=poll,
    )
    completion = await asyncio.wait_for(waiting.completion("abc-def", first_poll=0), 5)
    assert completion.channel is wa.Channel.POLL
    await waiting.close()


class VirtualTime:
    """A clock that moves only when the scheduler sleeps: each of its sleeps jumps ahead."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_a_pause_that_begins_while_the_next_poll_waits_for_a_slot_holds_it() -> None:
    """The only slot is held by a poll that ends in a 429: the poll waiting for that slot
    must wait for the pause too (it used to start at once, inside the pause)."""
    time_, gate = VirtualTime(), asyncio.Event()
    started: dict[str, list[float]] = {}
    limited_at: list[float] = []

    async def poll(wid: str) -> wa.Workflow:
        started.setdefault(wid, []).append(time_.now)
        if wid == "a" and len(started["a"]) == 1:
            await gate.wait()
            limited_at.append(time_.now)
            raise wa.RateLimitError(429, method="GET", path="/w", retry_after=10)
        return wa.Workflow(id=wid, status="COMPLETED")

    finished: list[wa.Workflow] = []
    policy = wa.PollPolicy(initial_delay=0, rate=1000, max_in_flight=1, jitter=0)
    scheduler = PollScheduler(
        policy,
        poll,
        StatusSet().is_terminal,
        lambda wid, workflow: finished.append(workflow),
        lambda wid, exc: None,
        clock=time_,
        sleep=time_.sleep,
    )
    scheduler.add("a", delay=0)
    scheduler.add("b", delay=0)
    scheduler.start()
    await eventually(lambda: "a" in started, "the first poll", interval=0)
    for _ in range(20):  # the loop gets to wait for the slot with "b" due
        await asyncio.sleep(0)
    gate.set()
    await eventually(lambda: len(finished) >= 2, "both polls done", interval=0)
    await scheduler.close()
    assert started["b"][0] >= limited_at[0] + 10
    assert scheduler.recorder.snapshot().polls.rate_limited == 1


async def test_polls_start_within_the_budget_on_a_virtual_clock() -> None:
    time_ = VirtualTime()
    starts: list[float] = []
    running = 0
    most = 0

    async def poll(wid: str) -> wa.Workflow:
        nonlocal running, most
        starts.append(time_.now)
        running += 1
        most = max(most, running)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            return wa.Workflow(id=wid, status="COMPLETED")
        finally:
            running -= 1

    finished: list[wa.Workflow] = []
    policy = wa.PollPolicy(initial_delay=0, rate=5, max_in_flight=3)
    scheduler = PollScheduler(
        policy,
        poll,
        StatusSet().is_terminal,
        lambda wid, workflow: finished.append(workflow),
        lambda wid, exc: None,
        clock=time_,
        sleep=time_.sleep,
    )
    for i in range(60):
        scheduler.add(f"w{i}", delay=0)
    scheduler.start()
    await eventually(lambda: len(finished) >= 60, "60 polls done", interval=0)
    await scheduler.close()
    assert most <= 3
    for i, start in enumerate(starts):
        assert sum(1 for t in starts[i:] if t < start + 1.0) <= policy.rate + 1
