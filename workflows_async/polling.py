"""The polling fallback: ONE scheduler task per Session for every waiting workflow.

Invariants: there is one scheduler task however many workflows wait; at most ``max_in_flight``
polls run at once and at most ``rate`` start per second (a token bucket shared by all waiters);
a 429 pauses every poll and halves the rate, which then recovers step by step; a workflow is
polled only while someone waits for it; a poll error ends a wait only when polling again cannot
help (``poll_error_verdict``), and nothing a poll or a callback raises stalls an entry or stops
the task; no two polls of a waiting workflow are more than ``max_interval`` apart (times
``webhook_stretch`` while webhooks are trusted), whatever the learned plan says.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import heapq
import logging
import math
import random
import time
import zlib
from collections.abc import Awaitable, Callable

import msgspec

from ._metrics import Recorder
from ._poll_plan import PollPlan
from .errors import (
    BadRequestError,
    ConfigurationError,
    CredentialsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SessionClosedError,
    WorkflowsError,
)
from .models import Workflow

__all__ = ["PollPolicy", "PollScheduler", "PollVerdict", "poll_error_verdict"]

log = logging.getLogger("workflows_async.polling")


_MIN_INTERVAL = 0.1  # seconds: the shortest interval after the first poll


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
    due: float
    added: float
    definition: str | None = None  # the workflow definition, when the waiter knows it
    running: float = -math.inf  # when a poll last found it still running


def _phase(workflow_id: str) -> float:
    """A wait's own jitter phase in [0, 1), the same at every call (pure)."""
    return (zlib.crc32(workflow_id.encode()) % 1024) / 1024


_RECHECK = 1.0  # seconds: the longest the scheduler sleeps without re-checking the webhook state

Poll = Callable[[str], Awaitable[Workflow]]
OnTerminal = Callable[[str, Workflow], None]
OnError = Callable[[str, BaseException], None]


class PollScheduler:
    """Polls due workflows within the budget; reports terminal ones through ``on_terminal``."""

    def __init__(
        self,
        policy: PollPolicy,
        poll: Poll,
        is_terminal: Callable[[str], bool],
        on_terminal: OnTerminal,
        on_error: OnError,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        stretch_allowed: Callable[[], bool] = lambda: True,
        recorder: Recorder | None = None,
    ) -> None:
        self.policy = policy
        self._poll = poll
        self._is_terminal = is_terminal
        self._on_terminal = on_terminal
        self._on_error = on_error
        self._clock = clock
        self._rand = rand
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, str]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(policy.max_in_flight)
        self._rate = policy.rate
        self._tokens = 1.0
        self._refilled = clock()
        self._paused_until = 0.0
        self._last_webhook = float("-inf")
        self._last_lost = float("-inf")
        self._stretch_allowed = stretch_allowed
        self.recorder = recorder or Recorder(clock=clock)
        self._lost_count = self.recorder.webhooks_lost
        self.plan = PollPlan()
        self.recorder.poll_state = self._state

    # -- waiters come and go ---------------------------------------------------------------

    def add(
        self, workflow_id: str, *, delay: float | None = None, definition: str | None = None
    ) -> None:
        """Start polling ``workflow_id`` (no-op when already scheduled); with ``definition``
        the polls follow what was learned of it (``learn``)."""
        if workflow_id in self._entries:
            return
        now = self._clock()
        entry = _Entry(0, now, now, definition)
        entry.due = now + (self._delay(workflow_id, entry) if delay is None else delay)
        self._entries[workflow_id] = entry
        self._push(entry.due, workflow_id)

    def learn(self, definition: str, started: float, ended: float) -> None:
        """A workflow of ``definition`` that started at ``started`` (this scheduler's clock)
        ended at ``ended`` (a webhook said so): the plan of later waits of it follows. An end
        found by a poll is learned here (``_poll_one``), as the middle of the time between
        the last poll that found it running and the one that found it ended."""
        if self.policy.learn_durations:
            self.plan.observe(definition, started, ended)

    def remove(self, workflow_id: str) -> None:
        """Stop polling ``workflow_id``; its heap item is skipped lazily."""
        self._entries.pop(workflow_id, None)
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._entries):
            self._heap = [(due, wid) for due, wid in self._heap if wid in self._entries]
            heapq.heapify(self._heap)

    def expedite(self) -> None:
        """Bring every entry due later than a normal interval forward (webhooks stopped)."""
        now = self._clock()
        for wid, entry in self._entries.items():
            normal = now + self._delay(wid, entry, stretched=False)
            if entry.due != math.inf and entry.due > normal:  # inf: a poll is in flight
                entry.due = normal
                self._push(normal, wid)

    def note_webhook(self) -> None:
        """A verified webhook arrived: polls may be spaced out more."""
        self._last_webhook = self._clock()

    def __len__(self) -> int:
        return len(self._entries)

    def clock(self) -> float:
        """The scheduler's clock (learned durations are measured on it)."""
        return self._clock()

    @property
    def scheduled(self) -> frozenset[str]:
        return frozenset(self._entries)

    @property
    def current_rate(self) -> float:
        return self._rate

    @property
    def paused(self) -> bool:
        """True while a 429 holds every poll back."""
        return self._clock() < self._paused_until

    def _state(self) -> tuple[float, bool, int]:
        return self._rate, self.paused, len(self._entries)

    # -- the one task -----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="workflows_async poll scheduler"
            )

    async def close(self) -> None:
        task, self._task = self._task, None
        tasks = [t for t in (task, *self._in_flight) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._entries.clear()
        self._heap.clear()

    def _stretched(self) -> bool:
        return (
            self._stretch_allowed()
            and self._clock() - self._last_webhook < self.policy.webhook_quiet_period
        )

    def _trusted(self) -> bool:
        """Webhooks are trusted: the bus is healthy, a webhook has come and none was counted
        lost since (the Recorder counts them; a new count is noticed here)."""
        lost = self.recorder.webhooks_lost
        if lost != self._lost_count:
            self._lost_count = lost
            self._last_lost = self._clock()
        return self._stretch_allowed() and self._last_webhook > self._last_lost

    def _interval(self, polls: int, *, stretched: bool | None = None) -> float:
        use = self._stretched() if stretched is None else stretched
        return self.policy.interval(polls, self._rand(), stretched=use)

    def _delay(self, wid: str, entry: _Entry, *, stretched: bool | None = None) -> float:
        """Seconds until the next poll of ``entry``: its definition's plan when one is known,
        else the policy's backoff (``stretched`` None: as the webhooks are now)."""
        if entry.definition is not None and self.policy.learn_durations:
            trusted = self._trusted()  # a trusted plan stays stretched past the quiet period
            cap = self.policy.max_interval * (self.policy.webhook_stretch if trusted else 1.0)
            planned = self.plan.next_poll(
                entry.definition,
                entry.added,
                self._clock(),
                trusted=trusted,
                cap=cap,
                jitter=self.policy.jitter,
                rand=_phase(wid),
                min_gap=_MIN_INTERVAL,
                trusted_floor=self.policy.initial_delay,
            )
            if planned is not None:
                return planned
        return self._interval(entry.polls, stretched=stretched)

    def _push(self, due: float, workflow_id: str) -> None:
        heapq.heappush(self._heap, (due, workflow_id))
        if self._heap[0][1] == workflow_id:
            self._wakeup.set()

    def _take_token(self, now: float) -> float:
        """0 when a poll may start now (a token is taken), else seconds until one is free."""
        self._tokens = min(1.0, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    async def _sleep(self, seconds: float) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wakeup.wait()

    async def _run(self) -> None:
        """The one task: survives a bug in any step (a dead task would hang every wait)."""
        was_relaxed = (False, False)
        while True:
            try:
                was_relaxed = await self._step(was_relaxed)
            except Exception as exc:
                log.error("poll scheduler step failed: %s", type(exc).__name__, exc_info=True)
                await self._sleep(_RECHECK)

    async def _step(self, was_relaxed: tuple[bool, bool]) -> tuple[bool, bool]:
        """One turn of the loop: sleep until something is due, or start one poll. Returns
        whether polls are stretched and webhooks trusted now (to notice when webhooks stop)."""
        relaxed = (self._stretched(), self._trusted())
        if (was_relaxed[0] and not relaxed[0]) or (was_relaxed[1] and not relaxed[1]):
            self.expedite()  # webhooks stopped, were lost, or the bus went down: normal pace
        if not self._heap:
            await self._sleep(3600.0)
            return relaxed
        due, wid = self._heap[0]
        entry = self._entries.get(wid)
        if entry is None or entry.due != due:
            heapq.heappop(self._heap)  # stale: removed or rescheduled
            return relaxed
        now = self._clock()
        wait = max(due - now, self._paused_until - now)
        if wait > 0:
            await self._sleep(min(wait, _RECHECK))  # wakes now and then to notice changes
            return relaxed
        # The slot first, then the token: a token is taken only when the poll can start at
        # once, so polls start (not merely get tokens) at most ``rate`` per second.
        await self._slots.acquire()
        # The heap may have changed while we waited for a slot (removals, compaction).
        if not self._heap or self._heap[0] != (due, wid) or self._entries.get(wid) is not entry:
            self._slots.release()
            return relaxed
        wait = self._take_token(self._clock())
        if wait > 0:
            self._slots.release()
            await self._sleep(wait)
            return relaxed
        heapq.heappop(self._heap)
        entry.due = float("inf")  # in flight: not due until the answer reschedules it
        try:
            task = asyncio.get_running_loop().create_task(self._poll_one(wid))
        except BaseException:
            self._slots.release()
            self._reschedule(wid)
            raise
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return relaxed

    async def _poll_one(self, wid: str) -> None:
        """One poll and what follows from it. Whatever happens, the entry ends up either
        rescheduled or removed with its waiters told (never left "in flight" for good)."""
        try:
            self.recorder.poll_sent(wid)
            workflow = await self._poll(wid)
            self._rate = min(self.policy.rate, self._rate * 1.1)
            if not same_workflow(wid, workflow.id):
                # A misrouted or cached answer: never resolve a wait with another's state.
                log.warning("poll of %s answered for another workflow; polling again", wid)
                self._reschedule(wid)
            elif self._is_terminal(workflow.status):
                if workflow.id != wid:  # another spelling: the id waited for is the truth
                    workflow = msgspec.structs.replace(workflow, id=wid)
                self._on_terminal(wid, workflow)  # first: if it raises, the entry is kept
                entry = self._entries.pop(wid, None)
                self.recorder.polled_terminal(wid)
                if entry is not None and entry.definition is not None:
                    now = self._clock()
                    self.learn(
                        entry.definition, entry.added, (max(entry.running, entry.added) + now) / 2
                    )
            else:
                entry = self._entries.get(wid)
                if entry is not None:
                    entry.running = self._clock()
                self._reschedule(wid)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # close(): this poll is being cancelled
            log.warning("poll of %s raised a stray CancelledError; polling again", wid)
            self._reschedule(wid)
        except Exception as exc:
            try:
                self._failed(wid, exc)
            except Exception as bug:  # e.g. in on_error: keep the entry, try again later
                log.error("handling a poll error of %s failed: %s", wid, type(bug).__name__)
                self._reschedule(wid)
        finally:
            self._slots.release()

    def _failed(self, wid: str, exc: Exception) -> None:
        entry = self._entries.get(wid)
        waited = self._clock() - entry.added if entry is not None else 0.0
        verdict = poll_error_verdict(
            exc, waited=waited, not_found_grace=self.policy.not_found_grace
        )
        if verdict is PollVerdict.SLOW_DOWN:
            retry_after = exc.retry_after if isinstance(exc, RateLimitError) else None
            self._reschedule(wid, delay=self._slow_down(retry_after))
        elif verdict is PollVerdict.FAIL:
            log.debug("poll of %s failed for good: %s", wid, type(exc).__name__)
            self._on_error(wid, exc)  # first: if it raises, the entry is kept
            self._entries.pop(wid, None)
        elif isinstance(exc, WorkflowsError | OSError):
            log.debug("poll of %s failed: %s", wid, type(exc).__name__)
            self._reschedule(wid)
        else:  # a bug (here, in the poll function or in a callback) must not stall the wait
            log.warning("poll of %s failed unexpectedly: %s", wid, type(exc).__name__)
            self._reschedule(wid)

    def _slow_down(self, retry_after: float | None) -> float:
        """Pause every poll (for the server's Retry-After, at most ``max_interval``: polling is
        what finishes waits whose webhooks were lost) and halve the rate; returns the pause."""
        pause = retry_after if retry_after is not None else self.policy.rate_limit_pause
        pause = min(pause, self.policy.max_interval)
        self._paused_until = max(self._paused_until, self._clock() + pause)
        self._rate = max(self.policy.rate / 64, self._rate / 2)
        self.recorder.poll_rate_limited(pause, self._rate)
        return pause

    def _reschedule(self, wid: str, *, delay: float | None = None) -> None:
        entry = self._entries.get(wid)
        if entry is None:
            return
        entry.polls += 1
        entry.due = self._clock() + (self._delay(wid, entry) if delay is None else delay)
        self._push(entry.due, wid)
