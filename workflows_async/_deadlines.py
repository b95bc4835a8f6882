"""Deadlines of pending waits: one heap and at most one timer for all of them.

A pending wait awaits its own future; its deadline is one small tuple in a shared heap instead
of an ``asyncio.timeout`` per wait (a Timeout, a TimerHandle and a loop-heap entry each).

Invariants: at most one loop timer is armed, for the earliest deadline; when a deadline passes
and its future is still pending, the future gets the error ``expired(workflow_id, timeout)``
made for it (one exception object per wait); a future already done is never touched; items of
finished waits are dropped lazily and the heap is rebuilt before they outnumber the live ones,
so memory follows the pending waits, not the finished ones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["Deadlines"]

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
