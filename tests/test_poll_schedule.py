"""The poll schedule without an event loop: plain functions, the time is a number we pass."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pytest

import workflows_async as wa
from workflows_async import _poll_plan, _poll_schedule
from workflows_async._poll_schedule import PollSchedule, PollVerdict

POLICY = wa.PollPolicy(initial_delay=5, max_interval=60, jitter=0, rate=10)


def schedule(
    policy: wa.PollPolicy = POLICY,
    *,
    healthy: list[bool] | None = None,
    lost: list[int] | None = None,
) -> PollSchedule:
    return PollSchedule(
        policy,
        rand=lambda: 0.5,
        stretch_allowed=lambda: (healthy or [True])[0],
        webhooks_lost=lambda: (lost or [0])[0],
    )


def rate_limited(retry_after: float | None) -> wa.RateLimitError:
    return wa.RateLimitError(429, method="GET", path="/workflows/w", retry_after=retry_after)


def api_error(cls: type[wa.APIError], status: int) -> wa.APIError:
    return cls(status, method="GET", path="/workflows/w")


# -- what is due, in which order ---------------------------------------------------------------


def test_due_order_and_in_flight_entries() -> None:
    s = schedule()
    for wid, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
        s.add(wid, 0.0, delay=delay)
    assert s.next_start(0.0) == 1.0 and s.take(0.5) is None
    assert [s.take(t) for t in (1.0, 2.0, 3.0)] == ["a", "b", "c"]
    assert s.due("a") == math.inf and s.next_start(3.0) is None  # all in flight
    s.expedite(3.0)
    assert s.due("a") == math.inf  # a poll in flight is not brought forward
    s.running("a", 4.0)
    assert s.due("a") == 4.0 + POLICY.interval(1)
    s.add("a", 4.0, delay=0)  # already scheduled: a no-op
    assert s.due("a") == 4.0 + POLICY.interval(1)


def test_a_removed_entry_is_never_handed_out_and_the_buckets_are_compacted() -> None:
    s = schedule()
    for i in range(200):
        s.add(f"w{i}", 0.0, delay=1.0 + i)
    for i in range(190):
        s.remove(f"w{i}")
    assert len(s) == 10 and s._items <= 64
    assert sum(map(len, s._buckets.values())) == s._items
    s.again("w0", 1.0)  # its outcome came after the removal: nothing to reschedule
    assert s.take(500.0) == "w190"


def test_a_poll_starts_at_its_bucket_time_never_before_its_due_time() -> None:
    s = schedule()
    s.add("w", 0.0, delay=1.001)
    tick = 1 / _poll_schedule.TICKS
    assert s.due("w") == 1.001  # the entry keeps its own time
    assert s.next_start(0.0) == math.ceil(1.001 / tick) * tick  # 1.015625: a tick late at most
    assert s.take(1.001) is None
    assert s.take(1.015625) == "w"


def test_next_start_waits_for_a_token_even_when_the_first_due_time_comes_sooner() -> None:
    s = schedule()  # rate 10: a token every 0.1 s
    s.add("a", 0.0, delay=0)
    s.add("b", 0.0, delay=0.05)
    assert s.take(0.0) == "a"
    assert s.next_start(0.0) == pytest.approx(0.1)  # not 0.05: no token then
    assert s.take(0.1) == "b"


def test_an_earlier_bucket_before_a_half_taken_first_one_loses_and_repeats_nothing() -> None:
    s = schedule(wa.PollPolicy(rate=1000))
    for wid in ("a", "b", "c"):
        s.add(wid, 10.0, delay=0)
    assert s.take(10.0) == "a"  # the first bucket is half taken
    s.add("z", 5.0, delay=0)  # an earlier bucket comes first
    taken = [s.take(now) for now in (10.01, 10.02, 10.03, 10.04)]
    assert taken == ["z", "b", "c", None]


def test_the_wake_callback_fires_when_an_entry_becomes_the_first_due() -> None:
    woken: list[str] = []
    s = PollSchedule(POLICY, wake=lambda: woken.append("!"))
    s.add("late", 0.0, delay=10)
    s.add("later", 0.0, delay=20)
    s.add("soon", 0.0, delay=1)
    assert woken == ["!", "!"]  # "later" did not move the first due time


def test_jitter_comes_from_the_injected_rand() -> None:
    policy = wa.PollPolicy(initial_delay=5, jitter=0.2)
    low, high = PollSchedule(policy, rand=lambda: 0.0), PollSchedule(policy, rand=lambda: 0.999)
    low.add("w", 0.0)
    high.add("w", 0.0)
    assert low.due("w") == pytest.approx(4.0) and high.due("w") == pytest.approx(6.0, rel=1e-3)


# -- the token bucket ------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.5, 3.0, 10.0])
def test_at_most_rate_times_t_plus_one_starts_in_any_window(rate: float) -> None:
    s = schedule(wa.PollPolicy(rate=rate))
    for i in range(500):
        s.add(f"w{i}", 0.0, delay=0)
    starts: list[float] = []
    for tick in range(2000):  # 20 s in steps of 10 ms, starting all that may start
        now = tick / 100
        while s.take(now) is not None:
            starts.append(now)
    assert len(starts) >= 0.9 * rate * 20  # the budget is used, not just respected
    for window in (0.05, 0.5, 1.0, 3.0):
        for i, start in enumerate(starts):
            inside = sum(1 for t in starts[i:] if t < start + window)
            assert inside <= rate * window + 1, (window, start)


def test_next_start_says_how_long_until_a_token_is_free() -> None:
    s = schedule()
    s.add("a", 0.0, delay=0)
    s.add("b", 0.0, delay=0)
    assert s.take(0.0) == "a"
    assert s.next_start(0.0) == pytest.approx(0.1)  # rate 10: one token per 0.1 s
    assert s.take(0.05) is None
    assert s.take(0.1) == "b"


# -- 429: pause, halve, recover ----------------------------------------------------------------


def test_a_429_pauses_every_poll_halves_the_rate_and_answers_bring_it_back() -> None:
    s = schedule()
    s.add("a", 0.0, delay=0)
    s.add("b", 0.0, delay=0)
    assert s.take(0.0) == "a"
    assert s.failed("a", rate_limited(3.0), 0.5) is PollVerdict.SLOW_DOWN
    assert (s.last_pause, s.paused_until, s.rate) == (3.0, 3.5, 5.0)
    assert s.paused(1.0) and s.take(1.0) is None  # "b" was due, but everyone waits
    assert s.next_start(1.0) == 2.5
    assert s.due("a") == 3.5
    assert s.take(3.5) == "b" and not s.paused(3.5)
    s.answered()
    assert s.rate == pytest.approx(5.5)  # x1.1 per answered poll
    for _ in range(20):
        s.answered()
    assert s.rate == POLICY.rate  # never above the policy's


def test_the_pause_is_the_retry_after_capped_at_max_interval_else_the_policy_pause() -> None:
    s = schedule(wa.PollPolicy(max_interval=60, rate_limit_pause=5))
    s.add("w", 0.0, delay=0)
    s.take(0.0)
    s.failed("w", rate_limited(86_400), 0.0)
    assert s.last_pause == 60 and s.paused_until == 60
    s.take(60.0)
    s.failed("w", rate_limited(None), 60.0)
    assert s.last_pause == 5 and s.paused_until == 65


def test_the_rate_never_falls_below_a_64th() -> None:
    s = schedule()
    s.add("w", 0.0, delay=0)
    now = 0.0
    for _ in range(10):
        now += s.next_start(now) or 0.0
        assert s.take(now) == "w"
        s.failed("w", rate_limited(0.0), now)
    assert s.rate == POLICY.rate / 64


def test_a_shorter_pause_does_not_cut_a_longer_one() -> None:
    s = schedule()
    for wid in ("a", "b"):
        s.add(wid, 0.0, delay=0)
    s.take(0.0)
    s.take(0.1)
    s.failed("a", rate_limited(10.0), 0.2)
    s.failed("b", rate_limited(1.0), 0.3)
    assert s.paused_until == pytest.approx(10.2)


# -- webhooks: stretch, trust, expedite ----------------------------------------------------------


def test_polls_stretch_while_webhooks_arrive_and_come_back_when_they_stop() -> None:
    s = schedule(wa.PollPolicy(initial_delay=5, webhook_stretch=4, webhook_quiet_period=60))
    s.note_webhook(0.0)
    s.check_webhooks(0.0)
    s.add("w", 50.0)
    assert s.due("w") == 70.0  # 5 s stretched x4
    s.check_webhooks(59.0)
    assert s.due("w") == 70.0  # still within the quiet period
    s.check_webhooks(61.0)  # no webhook for 61 s: back to the normal pace
    assert s.due("w") == 66.0
    assert s.next_start(61.0) == 5.0


def test_a_bus_that_goes_down_brings_stretched_polls_forward() -> None:
    healthy = [True]
    s = schedule(wa.PollPolicy(initial_delay=5, webhook_stretch=50), healthy=healthy)
    s.note_webhook(0.0)
    s.check_webhooks(0.0)
    s.add("w", 0.0)
    assert s.due("w") == 250.0
    healthy[0] = False
    s.check_webhooks(1.0)
    assert s.due("w") == 6.0
    s.check_webhooks(2.0)  # only a change expedites
    assert s.due("w") == 6.0


def test_a_lost_webhook_ends_the_trust_and_brings_planned_polls_forward() -> None:
    lost = [0]
    s = schedule(wa.PollPolicy(jitter=0), lost=lost)
    s.learn("d", 0.0, 600.0)
    s.note_webhook(1000.0)
    s.check_webhooks(1000.0)
    s.add("w", 1000.0, definition="d")
    assert s.due("w") == pytest.approx(1220.0)  # trusted: 660 s in three stretched gaps
    s.check_webhooks(1100.0)  # past the quiet period, but still trusted: kept
    assert s.due("w") == pytest.approx(1220.0)
    lost[0] += 1
    s.check_webhooks(1101.0)
    assert not s.trusted(1101.0)
    assert s.due("w") - 1101.0 <= 60.0
    s.note_webhook(1102.0)  # a webhook after the loss: trusted again
    assert s.trusted(1102.0)


# -- the learned plan --------------------------------------------------------------------------


def test_an_end_found_by_polls_is_learned_and_places_the_next_waits_polls() -> None:
    s = schedule()
    s.add("w", 0.0, definition="d")  # nothing learned yet: the backoff (5 s)
    assert s.take(5.0) == "w"
    s.running("w", 5.0)
    assert s.due("w") == 15.0
    assert s.take(15.0) == "w"
    s.ended("w", 15.0)
    assert "w" not in s
    assert s.plan.points("d", 15.0) == (10.0,)  # the middle of running at 5, ended at 15
    s.add("v", 100.0, definition="d")
    assert s.due("v") == pytest.approx(110.1)  # no webhooks: just after the learned end


def test_nothing_is_learned_when_learning_is_off_or_the_definition_unknown() -> None:
    s = schedule(wa.PollPolicy(learn_durations=False))
    s.add("w", 0.0, definition="d")
    s.take(5.0)
    s.ended("w", 15.0)
    assert len(s.plan) == 0
    s = schedule()
    s.add("w", 0.0)
    s.take(5.0)
    s.ended("w", 15.0)
    assert len(s.plan) == 0


# -- failure verdicts --------------------------------------------------------------------------


def test_not_found_is_polled_again_within_the_grace_then_fails() -> None:
    s = schedule(wa.PollPolicy(initial_delay=5, jitter=0, not_found_grace=30))
    s.add("w", 0.0)
    assert s.take(5.0) == "w"
    assert s.failed("w", api_error(wa.NotFoundError, 404), 5.0) is PollVerdict.AGAIN
    assert 5.0 < s.due("w") < math.inf
    now = s.due("w")
    while now < 30.0:
        assert s.take(now) == "w"
        assert s.failed("w", api_error(wa.NotFoundError, 404), now) is PollVerdict.AGAIN
        now = s.due("w")
    assert s.take(now) == "w"
    assert s.failed("w", api_error(wa.NotFoundError, 404), now) is PollVerdict.FAIL
    assert s.due("w") == math.inf  # untouched: the caller tells the waiters, then removes
    s.remove("w")
    assert len(s) == 0


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (api_error(wa.CredentialsError, 401), PollVerdict.FAIL),
        (api_error(wa.PermissionDeniedError, 403), PollVerdict.FAIL),
        (api_error(wa.AuthenticationError, 401), PollVerdict.AGAIN),
        (api_error(wa.ServerError, 503), PollVerdict.AGAIN),
        (KeyError("a bug"), PollVerdict.AGAIN),
    ],
)
def test_failed_polls_are_rescheduled_unless_polling_cannot_help(
    error: Exception, verdict: PollVerdict
) -> None:
    s = schedule()
    s.add("w", 0.0, delay=0)
    s.take(0.0)
    assert s.failed("w", error, 1.0) is verdict
    assert (s.due("w") == math.inf) is (verdict is PollVerdict.FAIL)


# -- the module stays pure ---------------------------------------------------------------------


def test_the_schedule_reads_no_clock() -> None:
    """test_layers checks that it does no I/O; here: it is told the time, never reads it."""
    for module in (_poll_schedule, _poll_plan):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(Path(str(module.__file__)).read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(str(node.module).split(".")[0])
        assert not {"asyncio", "time", "datetime"} & imported, module.__name__


def test_rule_1_every_entry_is_scheduled_or_in_flight() -> None:
    """Drive a schedule through many outcomes: each live entry has exactly one live heap item
    unless a poll of it is in flight."""
    s = schedule(wa.PollPolicy(initial_delay=0, max_interval=1, jitter=0, rate=100))
    for i in range(20):
        s.add(f"w{i}", 0.0, definition="d" if i % 2 else None)
    outcomes = itertools.cycle(["running", "again", "429", "404", "ended", "expedite"])
    now, in_flight = 0.0, []
    for _ in range(400):
        now += 0.05
        wid = s.take(now)
        if wid is not None:
            in_flight.append(wid)
        if in_flight and wid is None:
            done, outcome = in_flight.pop(0), next(outcomes)
            if outcome == "running":
                s.running(done, now)
            elif outcome == "again":
                s.again(done, now)
            elif outcome == "429":
                s.failed(done, rate_limited(0.2), now)
            elif outcome == "404":
                if s.failed(done, api_error(wa.NotFoundError, 404), now) is PollVerdict.FAIL:
                    s.remove(done)
            elif outcome == "ended":
                s.ended(done, now)
            else:
                s.expedite(now)
                s.again(done, now)
        for wid_ in s:
            assert live_items(s, wid_) == (0 if wid_ in in_flight else 1), wid_


def live_items(s: PollSchedule, wid: str) -> int:
    """How many times ``wid`` waits, not yet handed out, in the bucket of its due time."""
    due = s.due(wid)
    if due == math.inf:
        return 0
    tick = math.ceil(due * _poll_schedule.TICKS)
    bucket = s._buckets.get(tick, [])
    ahead = bucket[s._taken :] if s._ticks and s._ticks[0] == tick else bucket
    return ahead.count(wid)
