"""Time for the request path's retry loop that passes only when slept on: the waits are
recorded, none is waited for.

Invariants: ``clock()`` moves only by what ``sleep`` was asked for; every sleep is recorded in
order; a sleep still yields to the event loop once, as a real one would.
"""

from __future__ import annotations

import asyncio

import workflows_async as wa

__all__ = ["FakeTime"]


class FakeTime:
    """``install(session)`` makes the session's retries sleep and read time here."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def install(self, session: wa.Session) -> wa.Session:
        """Swap the retry loop's sleep and clock of ``session`` (its API calls, not its
        polling or its signing-key fetches, which never retry); returns ``session``."""
        session._http.sleep = self.sleep
        session._http.clock = self.clock
        return session
