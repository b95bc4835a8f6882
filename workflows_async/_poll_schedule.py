"""The poll schedule as a pure state machine: which waiting workflow is polled next and when.

Invariants: no clock is read and nothing here awaits (every method is told ``now``; randomness
and the webhook state come from injected callables), so it is tested without an event loop.

- Rule 1: an entry is either *scheduled* (``due`` is its time, and its id waits in the bucket
  of that time) or *in flight* (``due`` is inf: ``take`` handed it out); only an outcome
  (``again``, ``running``, ``ended``, ``failed``) or ``remove`` ends a flight (a FAIL verdict
  leaves it to ``remove``).
- Rule 2: ``take`` hands out a workflow only when its bucket's time has come (never before its
  due time, at most 1/TICKS s after), no 429 pause holds and a token is free (bucket of one,
  refilled at ``rate`` <= ``policy.rate`` per second): in any window of T seconds at most
  ``policy.rate * T + 1`` polls are handed out.
- Rule 3: no two polls of an entry are planned more than ``max_interval`` apart (times
  ``webhook_stretch`` while webhooks are trusted, whatever the learned plan says); the first
  ``check_webhooks`` after webhooks stop, are lost or the bus fails brings every stretched
  entry forward.
- Memory: one slotted entry, one dict slot and one list slot per workflow: due times are
  grouped in buckets of 1/TICKS s (their time rounded *up*), one heap item per bucket, as the
  deadlines of waits are (``_deadlines``); an id whose entry moved on (removed, rescheduled,
  in flight) is stale in its old bucket, skipped lazily and compacted away on removal.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import math
import random
import zlib
from collections.abc import Callable, Iterator

from ._poll_plan import PollPlan
from .errors import (
    BadRequestError,
    ConfigurationError,
    CredentialsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SessionClosedError,
)

__all__ = ["PollPolicy", "PollSchedule", "PollVerdict", "poll_error_verdict", "same_workflow"]

_MIN_INTERVAL = 0.1  # seconds: the shortest interval after the first poll

TICKS = 64
"""Buckets per second: a poll starts at most 1/TICKS s after its due time, never before."""


@dataclasses.dataclass(frozen=True, slots=True)
class PollPolicy:
    """When and how often waiting workflows are polled (``GET /workflows/{id}``).

    The first poll comes ``initial_delay`` seconds after the run; then intervals grow by
    ``multiplier`` up to ``max_interval``, each varied by +/- ``jitter`` (a share). All waiters
    share one budget: ``rate`` polls per second and ``max_in_flight`` at once. While verified
    webhooks arrive (one within ``webhook_quiet_period`` seconds) intervals are multiplied by
    ``webhook_stretch``: the webhook is the accelerator, polling the truth. A 429 without
    Retry-After pauses polling for ``rate_limit_pause`` seconds. A 404 is tolerated for
    ``not_found_grace`` seconds after the wait began (the API may not know a fresh run yet).

    With ``learn_durations`` (the default) the Session learns how long the workflows of each
    definition take (run to end seen, the last 32 per definition) and ``run_and_wait`` /
    ``execute_and_wait`` poll where the end is likely, instead of by backoff alone:

    - webhooks *trusted* (the bus is healthy, a webhook has come, and no webhook was counted
      lost since): one safety poll just after the longest learned duration, and before it
      only as many polls as the stretched cap (``max_interval * webhook_stretch``) demands;
    - webhooks not trusted (none came yet, or one was lost): a poll just after each learned
      quantile (10, 25, 50, 75, 90 %, the maximum), at most ``max_interval`` apart, so an end
      whose webhook was lost is noticed soon;
    - running longer than ever seen: polls go on with growing gaps, within the same cap.

    A definition never seen, or ``wait(id)`` (which does not know the definition), keeps the
    backoff above. The plan only places polls: the budget (``rate``, ``max_in_flight``), the
    429 pause and ``not_found_grace`` apply to planned polls as to any other. Webhook stretch
    combines with the plan through the cap: a trusted plan may space polls up to the stretched
    cap even after ``webhook_quiet_period`` (the trust lasts until a webhook is lost or the bus
    fails, and then every planned poll is brought forward at once).
    """

    initial_delay: float = 5.0
    multiplier: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.2
    rate: float = 10.0
    max_in_flight: int = 10
    webhook_stretch: float = 4.0
    webhook_quiet_period: float = 60.0
    rate_limit_pause: float = 5.0
    not_found_grace: float = 30.0
    learn_durations: bool = True

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_interval <= 0 or self.rate_limit_pause < 0:
            raise ConfigurationError("PollPolicy delays must be positive")
        if not self.not_found_grace >= 0:
            raise ConfigurationError("PollPolicy.not_found_grace must not be negative")
        if self.multiplier < 1 or self.webhook_stretch < 1:
            raise ConfigurationError("PollPolicy multiplier and webhook_stretch must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ConfigurationError("PollPolicy.jitter must be in [0, 1)")
        if self.rate <= 0 or self.max_in_flight < 1:
            raise ConfigurationError("PollPolicy needs a positive rate and max_in_flight")

    def interval(self, polls_done: int, rand: float = 0.5, *, stretched: bool = False) -> float:
        """Seconds before the next poll, after ``polls_done`` polls (pure; ``rand`` in [0, 1))."""
        if polls_done == 0:
            base = self.initial_delay
        else:
            try:
                grown = max(self.initial_delay, _MIN_INTERVAL) * self.multiplier**polls_done
            except OverflowError:  # thousands of polls: long past the cap anyway
                grown = math.inf
            base = max(min(self.max_interval, grown), min(self.max_interval, _MIN_INTERVAL))
        if stretched:
            base = min(base * self.webhook_stretch, self.max_interval * self.webhook_stretch)
        return base * (1 - self.jitter + 2 * self.jitter * rand)


class PollVerdict(enum.Enum):
    """What a failed poll means for the wait."""

    AGAIN = "again"
    """Transient: poll again after the normal backoff."""
    SLOW_DOWN = "slow down"
    """429: pause every poll and lower the rate."""
    FAIL = "fail"
    """Polling again cannot help: the waiters get the error now."""


# Errors that will not heal by polling again. A plain AuthenticationError is not here: the
# request path has already renewed the token and the new one was refused too (tokens revoked
# again), which a later poll with a later token may survive; CredentialsError is.
_FINAL = (
    CredentialsError,
    PermissionDeniedError,
    BadRequestError,
    ConfigurationError,
    SessionClosedError,
)


def poll_error_verdict(
    error: BaseException, *, waited: float, not_found_grace: float
) -> PollVerdict:
    """Decide what a poll's error means (pure). ``waited``: seconds since the wait began."""
    if isinstance(error, RateLimitError):
        return PollVerdict.SLOW_DOWN
    if isinstance(error, _FINAL):
        return PollVerdict.FAIL
    if isinstance(error, NotFoundError):
        return PollVerdict.AGAIN if waited < not_found_grace else PollVerdict.FAIL
    return PollVerdict.AGAIN  # 401 after a renewal, 409, 5xx, transport, decode, a bug


def same_workflow(polled: str, answered: str) -> bool:
    """Does an answer's id name the workflow polled (ids are UUIDs: case does not matter)?"""
    return polled.casefold() == answered.casefold()


@dataclasses.dataclass(slots=True)
class _Entry:
    polls: int
    due: float  # inf while a poll of it is in flight
    added: float
    definition: str | None = None  # the workflow definition, when the waiter knows it
    running: float = -math.inf  # when a poll last found it still running


def _phase(workflow_id: str) -> float:
    """A wait's own jitter phase in [0, 1), the same at every call (pure)."""
    return (zlib.crc32(workflow_id.encode()) % 1024) / 1024


class PollSchedule:
    """The due buckets of waiting workflows, the token bucket, the 429 pause, the webhook state
    and the learned plan; told the time, it answers what to poll next and when.

    ``rand`` gives the jitter of backoff intervals; ``stretch_allowed`` says whether webhooks
    may relax polling at all (the bus is healthy); ``webhooks_lost`` counts webhooks known lost
    (a new count ends the trust); ``wake`` is called when an entry lands in a bucket before
    every other (it is the first one due now), so a loop sleeping until the old first one can
    look again.
    """

    def __init__(
        self,
        policy: PollPolicy,
        *,
        rand: Callable[[], float] = random.random,
        stretch_allowed: Callable[[], bool] = lambda: True,
        webhooks_lost: Callable[[], int] = lambda: 0,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.policy = policy
        self.plan = PollPlan()
        self.rate = policy.rate
        """Polls per second now: halved by each 429, back up by x1.1 per answered poll."""
        self.paused_until = -math.inf
        """No poll starts before this time (a 429's pause)."""
        self.last_pause = 0.0
        """Seconds of the last 429's pause."""
        self._rand = rand
        self._stretch_allowed = stretch_allowed
        self._webhooks_lost = webhooks_lost
        self._wake = wake
        self._entries: dict[str, _Entry] = {}
        self._buckets: dict[int, list[str]] = {}  # tick -> ids due in it (stale ones too)
        self._ticks: list[int] = []  # heap of the buckets' ticks
        self._taken = 0  # ids at the front of the first bucket already handed out or skipped
        self._items = 0  # ids in the buckets, stale and taken ones included
        self._tokens = 1.0
        self._refilled = -math.inf
        self._last_webhook = -math.inf
        self._last_lost = -math.inf
        self._lost_count = webhooks_lost()
        self._relaxed = (False, False)  # (stretched, trusted) at the last check_webhooks

    # -- waiters come and go ---------------------------------------------------------------

    def add(
        self,
        workflow_id: str,
        now: float,
        *,
        delay: float | None = None,
        definition: str | None = None,
    ) -> None:
        """Schedule ``workflow_id`` (no-op when already scheduled): after ``delay`` seconds, or
        by the policy's backoff, or by what was learned of ``definition``."""
        if workflow_id in self._entries:
            return
        entry = _Entry(0, now, now, definition)
        entry.due = due = now + (self._delay(workflow_id, entry, now) if delay is None else delay)
        self._entries[workflow_id] = entry
        self._push(due, workflow_id)

    def remove(self, workflow_id: str) -> None:
        """Stop polling ``workflow_id``; its id is skipped lazily in its bucket, and the
        buckets are rebuilt once they hold more than four ids per entry."""
        self._entries.pop(workflow_id, None)
        if self._items > 64 and self._items > 4 * len(self._entries):
            self._compact()

    def clear(self) -> None:
        self._entries.clear()
        self._buckets.clear()
        self._ticks.clear()
        self._taken = self._items = 0

    def learn(self, definition: str, started: float, ended: float) -> None:
        """A workflow of ``definition`` ran from ``started`` to ``ended``: later waits of it
        are placed by the plan (when the policy learns durations)."""
        if self.policy.learn_durations:
            self.plan.observe(definition, started, ended)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def due(self, workflow_id: str) -> float:
        """When ``workflow_id`` is next due (inf: a poll of it is in flight); KeyError when
        it is not scheduled."""
        return self._entries[workflow_id].due

    # -- webhooks ----------------------------------------------------------------------------

    def note_webhook(self, now: float) -> None:
        """A verified webhook arrived: polls may be spaced out more."""
        self._last_webhook = now

    def stretched(self, now: float) -> bool:
        """A webhook came within the quiet period (and the bus is healthy)."""
        return (
            self._stretch_allowed() and now - self._last_webhook < self.policy.webhook_quiet_period
        )

    def trusted(self, now: float) -> bool:
        """Webhooks are trusted: the bus is healthy, a webhook has come and none was counted
        lost since (a new count of ``webhooks_lost`` is noticed here, at ``now``)."""
        lost = self._webhooks_lost()
        if lost != self._lost_count:
            self._lost_count = lost
            self._last_lost = now
        return self._stretch_allowed() and self._last_webhook > self._last_lost

    def check_webhooks(self, now: float) -> None:
        """Expedite when polls were stretched or webhooks trusted at the last check and are
        not now: webhooks stopped, one was lost, or the bus went down."""
        relaxed = (self.stretched(now), self.trusted(now))
        was, self._relaxed = self._relaxed, relaxed
        if (was[0] and not relaxed[0]) or (was[1] and not relaxed[1]):
            self.expedite(now)

    def expedite(self, now: float) -> None:
        """Bring every entry due later than a normal, unstretched interval forward."""
        for wid, entry in self._entries.items():
            if entry.due == math.inf:  # in flight: its outcome reschedules it
                continue
            normal = now + self._delay(wid, entry, now, stretched=False)
            if entry.due > normal:
                same = math.ceil(entry.due * TICKS) == math.ceil(normal * TICKS)
                entry.due = normal
                if not same:  # else its id, in that bucket already, stays the live one
                    self._push(normal, wid)

    # -- the budget: what starts when ---------------------------------------------------------

    def paused(self, now: float) -> bool:
        """True while a 429 holds every poll back."""
        return now < self.paused_until

    def next_start(self, now: float) -> float | None:
        """Seconds until a poll may start (0: ``take`` will answer one now), counting the
        first bucket's time, the 429 pause and the token bucket; None when no entry is
        scheduled (none, or all in flight)."""
        ticks, buckets, entries = self._ticks, self._buckets, self._entries
        while ticks:
            tick = ticks[0]
            bucket = buckets[tick]
            at = self._taken
            while at < len(bucket):
                entry = entries.get(bucket[at])
                due = math.inf if entry is None else entry.due
                if due != math.inf and math.ceil(due * TICKS) == tick:
                    break
                at += 1  # stale: removed, rescheduled or in flight
            else:  # the bucket is spent
                heapq.heappop(ticks)
                del buckets[tick]
                self._items -= len(bucket)
                self._taken = 0
                continue
            self._taken = at
            break
        else:
            return None
        wait = max(ticks[0] / TICKS - now, self.paused_until - now)
        tokens = min(1.0, self._tokens + (now - self._refilled) * self.rate)
        missing = 1.0 - tokens
        if missing >= 1e-9:  # 1e-9: float rounding
            wait = max(wait, missing / self.rate)
        if wait > 0:
            return wait  # the first bucket's time, the pause or a token, whichever is last
        self._tokens, self._refilled = tokens, now
        return 0.0

    def take(self, now: float) -> str | None:
        """The workflow to poll now, its token taken and the entry marked in flight; None
        when none may start now (``next_start`` tells how long to wait)."""
        if self.next_start(now) != 0.0:
            return None
        self._tokens -= 1.0
        wid = self._buckets[self._ticks[0]][self._taken]
        self._taken += 1
        self._entries[wid].due = math.inf
        return wid

    # -- what a poll found ------------------------------------------------------------------

    def answered(self) -> None:
        """A poll got an answer: the rate recovers a step (x1.1, up to the policy's)."""
        self.rate = min(self.policy.rate, self.rate * 1.1)

    def again(self, workflow_id: str, now: float, *, delay: float | None = None) -> None:
        """Poll ``workflow_id`` again: after ``delay``, else its next backoff or planned
        interval (no-op when it was removed meanwhile)."""
        entry = self._entries.get(workflow_id)
        if entry is None:
            return
        entry.polls += 1
        entry.due = now + (self._delay(workflow_id, entry, now) if delay is None else delay)
        self._push(entry.due, workflow_id)

    def running(self, workflow_id: str, now: float) -> None:
        """A poll found ``workflow_id`` still running at ``now``: poll it again later."""
        entry = self._entries.get(workflow_id)
        if entry is not None:
            entry.running = now
        self.again(workflow_id, now)

    def ended(self, workflow_id: str, now: float) -> None:
        """A poll found ``workflow_id`` ended: forget it, and learn its definition's duration
        as ending in the middle of the last poll that found it running and this one."""
        entry = self._entries.pop(workflow_id, None)
        if entry is not None and entry.definition is not None:
            ended = (max(entry.running, entry.added) + now) / 2
            self.learn(entry.definition, entry.added, ended)

    def failed(self, workflow_id: str, error: BaseException, now: float) -> PollVerdict:
        """A poll of ``workflow_id`` raised ``error``. AGAIN: rescheduled. SLOW_DOWN: every
        poll paused (``last_pause``: Retry-After, else the policy's pause, at most
        ``max_interval``, since polling is what finishes waits whose webhooks were lost), the
        rate halved (not below 1/64 of the policy's), and the entry due after the pause.
        FAIL: nothing changes here; the caller tells the waiters, then ``remove``s it."""
        entry = self._entries.get(workflow_id)
        waited = now - entry.added if entry is not None else 0.0
        verdict = poll_error_verdict(
            error, waited=waited, not_found_grace=self.policy.not_found_grace
        )
        if verdict is PollVerdict.SLOW_DOWN:
            retry_after = error.retry_after if isinstance(error, RateLimitError) else None
            pause = self.policy.rate_limit_pause if retry_after is None else retry_after
            self.last_pause = min(pause, self.policy.max_interval)
            self.paused_until = max(self.paused_until, now + self.last_pause)
            self.rate = max(self.policy.rate / 64, self.rate / 2)
            self.again(workflow_id, now, delay=self.last_pause)
        elif verdict is PollVerdict.AGAIN:
            self.again(workflow_id, now)
        return verdict

    # -- inside ------------------------------------------------------------------------------

    def _delay(
        self, wid: str, entry: _Entry, now: float, *, stretched: bool | None = None
    ) -> float:
        """Seconds until the next poll of ``entry``: its definition's plan when one is known,
        else the policy's backoff (``stretched`` None: as the webhooks are now)."""
        policy = self.policy
        if entry.definition is not None and policy.learn_durations:
            trusted = self.trusted(now)  # a trusted plan stays stretched past the quiet period
            cap = policy.max_interval * (policy.webhook_stretch if trusted else 1.0)
            planned = self.plan.next_poll(
                entry.definition,
                entry.added,
                now,
                trusted=trusted,
                cap=cap,
                jitter=policy.jitter,
                rand=_phase(wid),
                min_gap=_MIN_INTERVAL,
                trusted_floor=policy.initial_delay,
            )
            if planned is not None:
                return planned
        use = self.stretched(now) if stretched is None else stretched
        return policy.interval(entry.polls, self._rand(), stretched=use)

    def _push(self, due: float, workflow_id: str) -> None:
        """Put ``workflow_id`` in the bucket of ``due`` (rounded up to a tick); an infinite
        due time is never due."""
        if due == math.inf:
            return
        tick = math.ceil(due * TICKS)
        self._items += 1
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.append(workflow_id)
            return
        self._buckets[tick] = [workflow_id]
        ticks = self._ticks
        if ticks and tick >= ticks[0]:
            heapq.heappush(ticks, tick)
            return
        if self._taken:  # the old first bucket is no longer first: drop what it handed out
            first = self._buckets[ticks[0]]
            del first[: self._taken]
            self._items -= self._taken
            self._taken = 0
        heapq.heappush(ticks, tick)
        self._wake()

    def _compact(self) -> None:
        """Rebuild the buckets with the live ids only, each once."""
        entries, first = self._entries, self._ticks[0] if self._ticks else None
        buckets: dict[int, list[str]] = {}
        for tick, bucket in self._buckets.items():
            kept = [
                wid
                for wid in dict.fromkeys(bucket[self._taken :] if tick == first else bucket)
                if (entry := entries.get(wid)) is not None
                and entry.due != math.inf
                and math.ceil(entry.due * TICKS) == tick
            ]
            if kept:
                buckets[tick] = kept
        self._buckets, self._ticks, self._taken = buckets, list(buckets), 0
        heapq.heapify(self._ticks)
        self._items = sum(map(len, buckets.values()))
