"""The polling fallback: ONE scheduler task per Session for every waiting workflow.

Invariants: there is one scheduler task however many workflows wait; it only does the I/O
(sleeps, in-flight slots, poll tasks, callbacks) and asks the pure ``PollSchedule`` (see
``_poll_schedule``) what to poll and when, so its budget holds here: at most ``max_in_flight``
polls run at once (a slot is held before the token is taken) and at most ``rate`` start per
second; a 429 pauses every poll and halves the rate, which then recovers step by step; a
workflow is polled only while someone waits for it; a poll error ends a wait only when polling
again cannot help (``poll_error_verdict``), and nothing a poll or a callback raises stalls an
entry (every poll ends in an outcome told to the schedule) or stops the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

import msgspec

from ._metrics import Recorder
from ._poll_plan import PollPlan
from ._poll_schedule import (
    PollPolicy,
    PollSchedule,
    PollVerdict,
    poll_error_verdict,
    same_workflow,
)
from .errors import WorkflowsError
from .models import Workflow

__all__ = ["PollPolicy", "PollScheduler", "PollVerdict", "poll_error_verdict"]

log = logging.getLogger("workflows_async.polling")

_RECHECK = 1.0  # seconds: the longest the scheduler sleeps without re-checking the webhook state
_IDLE = 3600.0  # seconds: nothing scheduled (an add wakes the task at once)

Poll = Callable[[str], Awaitable[Workflow]]
OnTerminal = Callable[[str, Workflow], None]
OnError = Callable[[str, BaseException], None]
Sleep = Callable[[float], Awaitable[None]]


class PollScheduler:
    """Polls due workflows within the budget; reports terminal ones through ``on_terminal``.

    ``clock`` times the schedule; ``sleep`` (tests: a virtual clock's) replaces the task's own
    sleep, which otherwise ends early when an entry becomes the first one due.
    """

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
        sleep: Sleep | None = None,
    ) -> None:
        self.policy = policy
        self._poll = poll
        self._is_terminal = is_terminal
        self._on_terminal = on_terminal
        self._on_error = on_error
        self._clock = clock
        self._sleep_for = sleep
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(policy.max_in_flight)
        self.recorder = recorder or Recorder(clock=clock)
        recorder = self.recorder
        self.schedule = PollSchedule(
            policy,
            rand=rand,
            stretch_allowed=stretch_allowed,
            webhooks_lost=lambda: recorder.webhooks_lost,
            wake=self._wakeup.set,
        )
        recorder.poll_state = self._state

    # -- waiters come and go ---------------------------------------------------------------

    def add(
        self,
        workflow_id: str,
        *,
        delay: float | None = None,
        definition: str | None = None,
        now: float | None = None,
    ) -> None:
        """Start polling ``workflow_id`` (no-op when already scheduled); with ``definition``
        the polls follow what was learned of it (``learn``). ``now``: this scheduler's clock,
        when the caller has just read it (one float for the wait and its entry)."""
        if now is None:
            now = self._clock()
        self.schedule.add(workflow_id, now, delay=delay, definition=definition)

    def learn(self, definition: str, started: float, ended: float) -> None:
        """A workflow of ``definition`` that started at ``started`` (this scheduler's clock)
        ended at ``ended`` (a webhook said so): the plan of later waits of it follows. An end
        found by a poll is learned by the schedule itself (``PollSchedule.ended``)."""
        self.schedule.learn(definition, started, ended)

    def remove(self, workflow_id: str) -> None:
        """Stop polling ``workflow_id``."""
        self.schedule.remove(workflow_id)

    def expedite(self) -> None:
        """Bring every entry due later than a normal interval forward (webhooks stopped)."""
        self.schedule.expedite(self._clock())

    def note_webhook(self) -> None:
        """A verified webhook arrived: polls may be spaced out more."""
        self.schedule.note_webhook(self._clock())

    def __len__(self) -> int:
        return len(self.schedule)

    def clock(self) -> float:
        """The scheduler's clock (learned durations are measured on it)."""
        return self._clock()

    @property
    def plan(self) -> PollPlan:
        return self.schedule.plan

    @property
    def scheduled(self) -> frozenset[str]:
        return frozenset(self.schedule)

    @property
    def current_rate(self) -> float:
        return self.schedule.rate

    @property
    def paused(self) -> bool:
        """True while a 429 holds every poll back."""
        return self.schedule.paused(self._clock())

    def _state(self) -> tuple[float, bool, int]:
        return self.schedule.rate, self.paused, len(self.schedule)

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
        self.schedule.clear()

    async def _sleep(self, seconds: float) -> None:
        self._wakeup.clear()
        if self._sleep_for is not None:
            await self._sleep_for(max(0.0, seconds))
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wakeup.wait()

    async def _run(self) -> None:
        """The one task: survives a bug in any step (a dead task would hang every wait)."""
        while True:
            try:
                await self._step()
            except Exception as exc:
                log.error("poll scheduler step failed: %s", type(exc).__name__, exc_info=True)
                await self._sleep(_RECHECK)

    async def _step(self) -> None:
        """One turn of the loop: sleep until a poll may start, or start one."""
        schedule = self.schedule
        schedule.check_webhooks(self._clock())  # webhooks stopped or were lost: expedite
        wait = schedule.next_start(self._clock())
        if wait is None or wait > 0:
            # Wakes now and then to notice changes of the webhook state; at once on an add.
            await self._sleep(_IDLE if wait is None else min(wait, _RECHECK))
            return
        # The slot first, then the token: a token is taken only when the poll can start at
        # once, so polls start (not merely get tokens) at most ``rate`` per second. While we
        # waited for the slot, anything may have changed (a removal, a 429's pause): ``take``
        # looks again and may answer None.
        await self._slots.acquire()
        wid: str | None = None
        try:
            wid = schedule.take(self._clock())
            if wid is None:
                self._slots.release()
                return
            task = asyncio.get_running_loop().create_task(self._poll_one(wid))
        except BaseException:
            self._slots.release()
            if wid is not None:
                schedule.again(wid, self._clock())  # not left in flight for good
            raise
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _poll_one(self, wid: str) -> None:
        """One poll and what follows from it. Whatever happens, the entry ends up either
        rescheduled or removed with its waiters told (never left "in flight" for good)."""
        schedule = self.schedule
        try:
            self.recorder.poll_sent(wid)
            workflow = await self._poll(wid)
            schedule.answered()
            if not same_workflow(wid, workflow.id):
                # A misrouted or cached answer: never resolve a wait with another's state.
                log.warning("poll of %s answered for another workflow; polling again", wid)
                schedule.again(wid, self._clock())
            elif self._is_terminal(workflow.status):
                if workflow.id != wid:  # another spelling: the id waited for is the truth
                    workflow = msgspec.structs.replace(workflow, id=wid)
                self._on_terminal(wid, workflow)  # first: if it raises, the entry is kept
                schedule.ended(wid, self._clock())
                self.recorder.polled_terminal(wid)
            else:
                schedule.running(wid, self._clock())
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # close(): this poll is being cancelled
            log.warning("poll of %s raised a stray CancelledError; polling again", wid)
            schedule.again(wid, self._clock())
        except Exception as exc:
            try:
                self._failed(wid, exc)
            except Exception as bug:  # e.g. in on_error: keep the entry, try again later
                log.error("handling a poll error of %s failed: %s", wid, type(bug).__name__)
                schedule.again(wid, self._clock())
        finally:
            self._slots.release()

    def _failed(self, wid: str, exc: Exception) -> None:
        schedule = self.schedule
        verdict = schedule.failed(wid, exc, self._clock())
        if verdict is PollVerdict.SLOW_DOWN:
            self.recorder.poll_rate_limited(schedule.last_pause, schedule.rate)
        elif verdict is PollVerdict.FAIL:
            log.debug("poll of %s failed for good: %s", wid, type(exc).__name__)
            self._on_error(wid, exc)  # first: if it raises, the entry is kept
            schedule.remove(wid)
        elif isinstance(exc, WorkflowsError | OSError):
            log.debug("poll of %s failed: %s", wid, type(exc).__name__)
        else:  # a bug (in the poll function or in a callback) must not stall the wait
            log.warning("poll of %s failed unexpectedly: %s", wid, type(exc).__name__)
