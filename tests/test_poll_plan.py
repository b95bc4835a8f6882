"""The learned poll plan: pure (no event loop), and how the poll schedule follows it (told
the time, no task: each decision is asked for directly)."""

from __future__ import annotations

import itertools

import pytest

import workflows_async as wa
from workflows_async._poll_plan import DurationSketch, PollPlan
from workflows_async._poll_schedule import PollSchedule


def _polls(
    plan: PollPlan, until: float, *, trusted: bool, cap: float, rand: float = 0.5
) -> list[float]:
    """The poll times one wait of definition "d" (started at 0) gets until ``until``."""
    now, times = 0.0, []
    while now < until:
        gap = plan.next_poll("d", 0.0, now, trusted=trusted, cap=cap, jitter=0.2, rand=rand)
        assert gap is not None
        now += gap
        times.append(now)
    return times


def test_nothing_known_leaves_the_caller_its_backoff() -> None:
    plan = PollPlan()
    assert plan.next_poll("d", 0.0, 0.0, trusted=True, cap=60) is None
    assert plan.next_poll(None, 0.0, 0.0, trusted=True, cap=60) is None


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_trusted_webhooks_need_only_the_polls_the_cap_demands(rand: float) -> None:
    plan = PollPlan()
    plan.observe("d", 0.0, 600.0)
    times = _polls(plan, 700, trusted=True, cap=240, rand=rand)
    before = [t for t in times if t < 600]
    assert len(before) == 2  # 600 s / 240 s cap: two safety polls, then one just after 600
    assert 600 < times[2] <= 660
    assert all(b - a <= 240 for a, b in zip([0.0, *times], times, strict=False))


def test_a_trusted_plan_leaves_a_quick_workflow_its_webhook_time() -> None:
    """Workflows that end in milliseconds: while webhooks arrive, the safety poll comes no
    sooner than the policy's first-poll delay, or it would race (and beat) the webhook."""
    plan = PollPlan()
    plan.observe("d", 0.0, 0.01)
    gap = plan.next_poll("d", 0.0, 0.0, trusted=True, cap=60, trusted_floor=5.0)
    assert gap == pytest.approx(5.0)
    # webhooks being lost: the learned end is what matters, no floor
    lost = plan.next_poll("d", 0.0, 0.0, trusted=False, cap=60, trusted_floor=5.0)
    assert lost is not None and lost < 1.0


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_lost_webhooks_poll_just_after_the_learned_end(rand: float) -> None:
    plan = PollPlan()
    for started in range(5):
        plan.observe("d", started, started + 600.0)
    times = _polls(plan, 620, trusted=False, cap=60, rand=rand)
    assert all(b - a <= 60 for a, b in zip([0.0, *times], times, strict=False))
    noticed = next(t for t in times if t >= 600)
    assert noticed - 600 <= 10
    assert len(times) <= 13  # + run + result: <= 15 calls


def test_quantiles_each_get_a_poll_when_webhooks_are_lost() -> None:
    plan = PollPlan()
    for duration in (100, 200, 300, 400, 500, 600, 700, 800, 900, 1000):
        plan.observe("d", 0.0, float(duration))
    points = plan.points("d", 1000.0)
    times = _polls(plan, 1100, trusted=False, cap=60)
    for point in points:  # every learned point has a poll within 2 % after it
        assert any(point <= t <= point * 1.02 for t in times), (point, times)


def test_past_every_learned_point_polls_go_on_within_the_cap() -> None:
    plan = PollPlan()
    plan.observe("d", 0.0, 10.0)
    times = _polls(plan, 2000, trusted=True, cap=60)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 60 + 1e-9
    assert gaps[-1] == pytest.approx(60)  # grown to the cap, never stopping


def test_memory_is_bounded_per_definition_and_in_definitions() -> None:
    plan = PollPlan(samples=4, max_definitions=3)
    for i in range(10):
        plan.observe("d", 0.0, float(i + 1))
    assert plan.points("d", 10.0)[-1] == 10.0
    assert min(plan.points("d", 10.0)) == 7.0  # only the last 4 remain
    for name in ("a", "b", "c"):
        plan.observe(name, 0.0, 1.0)
    assert len(plan) == 3
    assert plan.points("d", 10.0) == ()  # the least recently used was forgotten


def test_old_knowledge_is_forgotten_and_nonsense_ignored() -> None:
    plan = PollPlan(max_age=100.0)
    plan.observe("d", 0.0, -5.0)
    plan.observe("d", 0.0, float("nan"))
    assert plan.points("d", 0.0) == ()
    plan.observe("d", 0.0, 10.0)
    assert plan.points("d", 50.0) == (10.0,)
    assert plan.points("d", 200.0) == ()
    assert len(plan) == 0


def test_sketch_points_merge_near_duplicates() -> None:
    sketch = DurationSketch(8)
    for value in (600.0, 600.5, 601.0, 900.0):
        sketch.add(value, 0.0)
    assert sketch.points() == (600.5, 900.0) or sketch.points()[0] <= 601.0
    assert sketch.points()[-1] == 900.0
    assert len(sketch.points()) == 2


NOW = 1000.0


def _schedule(policy: wa.PollPolicy, healthy: list[bool], lost: list[int]) -> PollSchedule:
    return PollSchedule(
        policy,
        rand=lambda: 0.5,
        stretch_allowed=lambda: healthy[0],
        webhooks_lost=lambda: lost[0],
    )


def test_scheduler_follows_the_plan_and_falls_back_without_it() -> None:
    schedule = _schedule(wa.PollPolicy(jitter=0), [True], [0])
    schedule.learn("d", NOW - 600.0, NOW)
    schedule.note_webhook(NOW)
    schedule.add("known", NOW, definition="d")
    schedule.add("unknown", NOW, definition="never seen")
    schedule.add("by-id", NOW)  # wait(id): no definition
    due = {wid: schedule.due(wid) - NOW for wid in schedule}
    assert due["known"] == pytest.approx(220.0)  # 660 / 3: the stretched cap is 240
    assert due["unknown"] == due["by-id"] == 20.0  # today's schedule: 5 s, stretched x4


def test_a_lost_webhook_brings_planned_polls_forward() -> None:
    now, lost = NOW, [0]
    schedule = _schedule(wa.PollPolicy(jitter=0), [True], lost)
    schedule.learn("d", now - 600.0, now)
    schedule.note_webhook(now)
    schedule.add("w", now, definition="d")
    assert schedule.due("w") - now == pytest.approx(220.0)
    now += 61.0  # past the quiet period: a trusted plan keeps its spacing
    schedule.expedite(now)
    assert schedule.due("w") - now == pytest.approx(159.0)
    lost[0] += 1  # the Recorder counted a lost webhook
    schedule.expedite(now)
    gap = schedule.due("w") - now
    assert gap <= 60.0  # not trusted any more: the unstretched cap, aimed at the quantiles


def test_a_failed_bus_ends_the_trust() -> None:
    healthy = [True]
    schedule = _schedule(wa.PollPolicy(jitter=0), healthy, [0])
    schedule.learn("d", NOW - 600.0, NOW)
    schedule.note_webhook(NOW)
    assert schedule.trusted(NOW)
    healthy[0] = False
    assert not schedule.trusted(NOW)
    schedule.add("w", NOW, definition="d")
    assert schedule.due("w") - NOW <= 60.0


def test_learning_can_be_switched_off() -> None:
    schedule = _schedule(wa.PollPolicy(jitter=0, learn_durations=False), [True], [0])
    schedule.learn("d", NOW - 600.0, NOW)
    assert len(schedule.plan) == 0
    schedule.add("w", NOW, definition="d")
    assert schedule.due("w") - NOW == 5.0
