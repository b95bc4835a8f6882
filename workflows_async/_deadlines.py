"""Deadlines of waits, and the one error a missed deadline raises.

``Deadlines``: a pending ``wait()`` awaits its own future; its deadline is one small tuple in a
shared heap instead of an ``asyncio.timeout`` per wait (a Timeout, a TimerHandle and a
loop-heap entry each). ``WaitScope``: the deadline of a wait that runs code (a run request, a
result fetch), as one ``asyncio.timeout``.

Invariants: at most one loop timer is armed, for the earliest deadline; when a deadline passes
and its future is still pending, the future gets the error ``expired(workflow_id, timeout)``
made for it (one exception object per wait); a future already done is never touched; items of
finished waits are dropped lazily and the heap is rebuilt before they outnumber the live ones,
so memory follows the pending waits, not the finished ones. A deadline missed after the
workflow id is known raises :func:`wait_timed_out`'s error, whichever of the two enforced it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from .errors import WorkflowsError, WorkflowTimeout

__all__ = ["DEFAULT_WAIT_TIMEOUT", "Deadlines", "WaitScope", "wait_timed_out"]

DEFAULT_WAIT_TIMEOUT = 900.0
"""Seconds a wait lasts unless told otherwise (``run_and_wait``, ``wait``, the CLI's
``--timeout``). Here, in a module that loads neither aiohttp nor the Session, so the command
can show it cheaply."""

Expired = Callable[[str, float], BaseException]
_Item = tuple[float, int, "asyncio.Future[Any]", str, float]


class Deadlines:
    """Fail futures whose deadline (``loop.time()`` based) has passed."""

    def __init__(self, expired: Expired) -> None:
        self._expired = expired
        self._heap: list[_Item] = []
        self._seq = itertools.count()
        self._live = 0  # added and not yet finished (the rest of the heap is stale)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")

    def __len__(self) -> int:
        return self._live

    def add(self, future: asyncio.Future[Any], workflow_id: str, timeout: float) -> float:
        """Fail ``future`` with ``expired(workflow_id, timeout)`` in ``timeout`` seconds unless
        it is done by then; call :meth:`finished` once the wait is over. Returns the deadline
        (``loop.time()`` based)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + timeout
        heapq.heappush(self._heap, (when, next(self._seq), future, workflow_id, timeout))
        self._live += 1
        if when < self._armed_at:
            self._arm(loop, when)
        return when

    def finished(self) -> None:
        """A wait given to :meth:`add` is over (whatever ended it)."""
        self._live -= 1
        if len(self._heap) > 2 * self._live + 64:
            self._heap = [item for item in self._heap if not item[2].done()]
            heapq.heapify(self._heap)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_at = None, float("inf")
        self._heap.clear()
        self._live = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire, loop)
        self._armed_at = when

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._armed_at = None, float("inf")
        heap, now = self._heap, loop.time()
        while heap and heap[0][0] <= now:
            _, _, future, workflow_id, timeout = heapq.heappop(heap)
            if not future.done():
                future.set_exception(self._expired(workflow_id, timeout))
        while heap and heap[0][2].done():  # finished waits: no timer for them
            heapq.heappop(heap)
        if heap:
            self._arm(loop, heap[0][0])


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
