"""Lost-webhook bookkeeping: pure, no I/O, no task; the clock is injected.

Invariants: a workflow whose end a poll found is awaited for ``grace`` seconds, then reported
lost exactly once unless a terminal webhook for it came first (or had come just before); at
most ``max_tracked`` workflows are awaited and remembered (oldest forgotten first); the
"webhooks are not arriving" alarm fires at most once per ``interval``, when at least
``warn_min`` completions of the interval were found by polling and they outnumber the webhooks;
"a terminal webhook came" is asked of ``ended_by_webhook`` when the engine sets it (it knows,
for the replay window), else remembered here for four graces.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ._ttl import TTLMap

__all__ = ["LostWebhooks"]


class LostWebhooks:
    """Pairs the ends found by polls with the webhooks that should follow them."""

    def __init__(
        self,
        *,
        grace: float,
        interval: float,
        warn_min: int,
        max_tracked: int,
        clock: Callable[[], float],
    ) -> None:
        self.grace = grace
        self.interval = interval
        self.warn_min = warn_min
        self._max_tracked = max_tracked
        self._clock = clock
        self._seen: TTLMap[bool] = TTLMap(max(grace, 1.0) * 4, max_tracked, clock)
        self.ended_by_webhook: Callable[[str], bool] | None = None
        """Set by the engine, which knows which workflows a terminal webhook ended (for the
        replay window): then no entry of its own is kept per webhook."""
        self._awaited: OrderedDict[str, float] = OrderedDict()  # workflow id -> deadline
        self._interval_start = clock()
        self.interval_polled = 0
        self.interval_webhooks = 0
        self._warned = False

    @property
    def interval_age(self) -> float:
        return self._clock() - self._interval_start

    def webhook(self, workflow_id: str) -> float | None:
        """A terminal webhook for ``workflow_id`` came; returns how long after the poll that
        found its end, when one had (else None)."""
        now = self._clock()
        if self.ended_by_webhook is None:
            self._seen.put(workflow_id, True)
        if now - self._interval_start >= self.interval:
            self._roll(now)
        self.interval_webhooks += 1
        if not self._awaited:
            return None
        deadline = self._awaited.pop(workflow_id, None)
        return None if deadline is None else now - (deadline - self.grace)

    def seen(self, workflow_id: str) -> bool:
        """Has a terminal webhook for ``workflow_id`` come lately?"""
        if self.ended_by_webhook is not None:
            return self.ended_by_webhook(workflow_id)
        return self._seen.get(workflow_id) is not None

    def polled(self, workflow_id: str, *, alarm: bool = True) -> bool:
        """A poll found ``workflow_id`` ended. True when the alarm should fire now (never
        without ``alarm``: e.g. no receiver here, so no webhook is expected)."""
        now = self._clock()
        self._roll(now)
        self.interval_polled += 1
        if not self.seen(workflow_id):
            self._awaited.pop(workflow_id, None)
            self._awaited[workflow_id] = now + self.grace
            while len(self._awaited) > self._max_tracked:
                self._awaited.popitem(last=False)
        if (
            not alarm
            or self._warned
            or self.interval_polled < self.warn_min
            or self.interval_polled <= self.interval_webhooks
        ):
            return False
        self._warned = True
        return True

    def expired(self) -> list[str]:
        """The awaited workflows whose grace has run out (each reported once)."""
        found: list[str] = []
        if not self._awaited:
            return found
        now = self._clock()
        while self._awaited:
            workflow_id, deadline = next(iter(self._awaited.items()))
            if deadline > now:
                break
            del self._awaited[workflow_id]
            found.append(workflow_id)
        return found

    def __len__(self) -> int:
        return len(self._awaited)

    def _roll(self, now: float) -> None:
        if now - self._interval_start >= self.interval:
            self._interval_start = now
            self.interval_polled = 0
            self.interval_webhooks = 0
            self._warned = False
