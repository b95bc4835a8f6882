"""Deadlines of waits, and the one error a missed deadline raises.

``Deadlines``: a pending ``wait()`` is its own item in one shared timer wheel instead of an
``asyncio.timeout`` per wait (a Timeout, a TimerHandle and a loop-heap entry each): items are
grouped in buckets of 1/64 s by their deadline rounded *up*, so a wait costs one list slot
(~9 bytes at scale, where a heap item costs ~90) and expires at most 1/64 s late, never early.
``WaitScope``: the deadline of a wait that runs code (a run request, a result fetch), as one
``asyncio.timeout``.

Invariants: at most one loop timer is armed, for the earliest bucket; when a bucket's time
comes, each of its items is told (``expire``) and fails its wait unless that is over (one
exception object per wait); items of finished waits (``over()``) are dropped lazily and the
buckets are rebuilt before they outnumber the live items, so memory follows the pending
waits, not the finished ones. A deadline missed after the workflow id is known raises
:func:`wait_timed_out`'s error, whichever of the two enforced it.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from types import TracebackType
from typing import Protocol, Self

from .errors import ConfigurationError, WorkflowsError, WorkflowTimeout

__all__ = [
    "DEFAULT_WAIT_TIMEOUT",
    "Deadlines",
    "Expiring",
    "WaitScope",
    "check_wait_timeout",
    "wait_timed_out",
]

DEFAULT_WAIT_TIMEOUT = 900.0
"""Seconds a wait lasts unless told otherwise (``run_and_wait``, ``wait``, the CLI's
``--timeout``). Here, in a module that loads neither aiohttp nor the Session, so the command
can show it cheaply."""


def check_wait_timeout(timeout: object) -> float:
    """``timeout`` if it is a usable wait timeout (seconds > 0; ``math.inf``: no deadline),
    else :class:`ConfigurationError` (checked before anything is sent or registered)."""
    if type(timeout) is float and timeout > 0:  # the usual case, checked first
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, _NUMBER) or not timeout > 0:
        raise ConfigurationError("timeout must be a number of seconds > 0 (math.inf: none)")
    return float(timeout)


_NUMBER = (int, float)


TICKS = 64
"""Buckets per second: a deadline is met at most 1/TICKS s late."""


class Expiring(Protocol):
    """A wait with a deadline, as the wheel sees it."""

    def over(self) -> bool:
        """The wait has ended: its item may be dropped."""

    def expire(self) -> None:
        """Its deadline passed: fail the wait unless it is over."""


class Deadlines:
    """Tell waits whose deadline (``loop.time()`` based) has passed."""

    def __init__(self) -> None:
        self._buckets: dict[int, list[Expiring]] = {}  # tick -> its items
        self._ticks: list[int] = []  # heap of the buckets' ticks
        self._items = 0  # in the buckets, stale ones included
        self._live = 0  # added and not yet finished
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def __len__(self) -> int:
        return self._live

    def add(self, item: Expiring, timeout: float) -> float:
        """Expire ``item`` once ``timeout`` seconds have passed (within 1/TICKS s after)
        unless it is over by then; call :meth:`finished` once its wait is over. Returns the
        deadline (``loop.time()`` based)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + timeout
        self._live += 1
        if when == math.inf:  # an infinite timeout never expires
            return when
        tick = math.ceil(when * TICKS)
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = [item]
            heapq.heappush(self._ticks, tick)
            if tick / TICKS < self._armed_at:
                self._arm(loop, tick)
        else:
            bucket.append(item)
        self._items += 1
        return when

    def finished(self) -> None:
        """A wait given to :meth:`add` is over (whatever ended it)."""
        self._live -= 1
        if self._items > 2 * self._live + 64:
            self._compact()

    def _compact(self) -> None:
        buckets: dict[int, list[Expiring]] = {}
        for tick, bucket in self._buckets.items():
            kept = [item for item in bucket if not item.over()]
            if kept:
                buckets[tick] = kept
        self._buckets, self._ticks = buckets, list(buckets)
        heapq.heapify(self._ticks)
        self._items = sum(map(len, buckets.values()))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_at = None, math.inf
        self._buckets.clear()
        self._ticks.clear()
        self._items = self._live = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, tick: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = tick / TICKS
        self._timer = loop.call_at(self._armed_at, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._armed_at = None, math.inf
        ticks, now = self._ticks, loop.time()
        while ticks and ticks[0] / TICKS <= now:
            bucket = self._buckets.pop(heapq.heappop(ticks), None) or []
            self._items -= len(bucket)
            for item in bucket:
                item.expire()
        if ticks:
            self._arm(loop, ticks[0])


class WaitScope:
    """One wait's deadline and its errors: on expiry :class:`WorkflowTimeout`; once the
    workflow id is known, every :class:`WorkflowsError` leaving the scope carries it.
    ``at``: an absolute deadline (``loop.time()``) instead of ``timeout`` from now."""

    def __init__(
        self,
        timeout: float,
        workflow_id: str | None = None,
        *,
        before: str = "the run request",
        at: float | None = None,
    ) -> None:
        self.timeout = timeout
        self.workflow_id = workflow_id
        self._before = before  # what the API had not answered when no id is known yet
        self._deadline = asyncio.timeout(timeout) if at is None else asyncio.timeout_at(at)

    async def __aenter__(self) -> Self:
        await self._deadline.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._deadline.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            if not self._deadline.expired():
                raise
            raise self._timed_out() from None
        if isinstance(exc, WorkflowsError) and exc.workflow_id is None and self.workflow_id:
            exc.workflow_id = self.workflow_id  # then re-raised as it is

    def _timed_out(self) -> WorkflowTimeout:
        wid = self.workflow_id
        if wid is None:
            return WorkflowTimeout(
                f"timed out before the API answered {self._before}", workflow_id=""
            )
        return wait_timed_out(wid, self.timeout)


def wait_timed_out(workflow_id: str, timeout: float) -> WorkflowTimeout:
    """The error of a wait for ``workflow_id`` whose ``timeout`` passed: it says how to
    resume."""
    return WorkflowTimeout(
        f"workflow {workflow_id}: no result within {timeout:g} s; "
        f"await session.wait({workflow_id!r}) to pick it up again",
        workflow_id=workflow_id,
    )
