"""``await eventually(predicate, "what")``: the one way a test waits for a condition in real time.

Invariants: the wait is bounded (``timeout`` seconds, 10 by default, well inside pytest-timeout's
120), and at its end the test fails with an ``AssertionError`` that names what was awaited; the
predicate (sync, or async: its awaitable is awaited) is asked at least once, and once more after
the deadline, so a condition that became true during the last sleep still counts; an exception
raised by the predicate ends the wait at once (e.g. "the child process exited").
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

__all__ = ["eventually"]


async def eventually(
    predicate: Callable[[], object],
    what: str,
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
) -> None:
    """Return once ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = loop.time() >= deadline
        answer = predicate()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return
        if last:
            raise AssertionError(f"timed out after {timeout:g} s waiting for: {what}")
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
