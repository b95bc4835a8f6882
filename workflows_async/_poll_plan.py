"""Poll where the answer is: a learned, per-definition schedule of safety polls (pure).

Invariants: memory is bounded (``samples`` durations per definition, ``max_definitions``
definitions, least recently used forgotten first); a plan only *places* polls, never spaces
two of them more than ``cap`` apart, and never stops: past the last learned point it polls on
with growing gaps (still at most ``cap``); with nothing learned it answers None and the caller
keeps its own schedule. No clock is read here: every method is told the time.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

__all__ = ["DurationSketch", "PollPlan"]

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
_MARGIN = 0.01  # a point aimed at a learned quantile comes this share after it
_TRUSTED_MARGIN = 0.1  # the one trusted safety poll: room for the webhook's own delivery
_GRID_JITTER = 0.25  # share of ``jitter`` by which grid points move earlier
_MIN_GAP = 0.05  # share of the next point: planned polls closer than this are merged


class DurationSketch:
    """The last ``samples`` durations of one definition (a ring: recent runs count, old ones
    age out as the definition changes)."""

    __slots__ = ("_ring", "updated")

    def __init__(self, samples: int) -> None:
        self._ring: deque[float] = deque(maxlen=samples)
        self.updated = -math.inf

    def add(self, duration: float, now: float) -> None:
        self._ring.append(duration)
        self.updated = now

    def __len__(self) -> int:
        return len(self._ring)

    def points(self) -> tuple[float, ...]:
        """The learned quantiles and the maximum, ascending, without near-duplicates."""
        ordered = sorted(self._ring)
        if not ordered:
            return ()
        picks = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in QUANTILES]
        points: list[float] = []
        for value in (*picks, ordered[-1]):
            if not points or value > points[-1] * (1 + _MIN_GAP):
                points.append(value)
        return tuple(points)


class PollPlan:
    """Durations learned per workflow definition, and where the next safety poll goes."""

    def __init__(
        self, *, samples: int = 32, max_definitions: int = 256, max_age: float = 86_400.0
    ) -> None:
        self.samples = samples
        self.max_definitions = max_definitions
        self.max_age = max_age  # a sketch not updated for this long is forgotten
        self._sketches: OrderedDict[str, DurationSketch] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sketches)

    def observe(self, definition: str, started: float, ended: float) -> None:
        """A workflow of ``definition`` started at ``started`` was seen ended at ``ended``."""
        duration = ended - started
        if not duration > 0 or not math.isfinite(duration):
            return
        sketch = self._sketches.pop(definition, None) or DurationSketch(self.samples)
        sketch.add(duration, ended)
        self._sketches[definition] = sketch  # most recently used last
        while len(self._sketches) > self.max_definitions:
            self._sketches.popitem(last=False)

    def points(self, definition: str | None, now: float) -> tuple[float, ...]:
        """The learned points of ``definition`` (empty: nothing known, or too old)."""
        if definition is None:
            return ()
        sketch = self._sketches.get(definition)
        if sketch is None:
            return ()
        if now - sketch.updated > self.max_age:
            del self._sketches[definition]
            return ()
        return sketch.points()

    def next_poll(
        self,
        definition: str | None,
        started: float,
        now: float,
        *,
        trusted: bool,
        cap: float,
        jitter: float = 0.0,
        rand: float = 0.5,
        min_gap: float = 0.1,
        trusted_floor: float = 0.0,
    ) -> float | None:
        """Seconds from ``now`` until the next poll of a workflow of ``definition`` started at
        ``started``; None when nothing is known (the caller's backoff applies).

        ``trusted``: webhooks are arriving, so only one safety poll is aimed, just after the
        longest learned duration and never before ``trusted_floor`` seconds (the caller's own
        first-poll delay: a workflow that ends in milliseconds must leave its webhook time to
        arrive before a poll races it); otherwise a poll is aimed just after each learned quantile,
        so an end whose webhook was lost is noticed soon. Between aimed points the polls are
        spread evenly, never more than ``cap`` apart, and moved earlier by up to ``jitter / 4``
        of a segment: ``rand`` is the wait's own phase (the same at every call), so waits
        started together do not all poll at once and no wait polls twice for one point.
        """
        learned = self.points(definition, now)
        if not learned:
            return None
        if trusted:
            aims = [max(learned[-1] * (1 + _TRUSTED_MARGIN), trusted_floor)]
        else:
            aims = [point * (1 + _MARGIN) for point in learned]
        elapsed = now - started
        previous = 0.0
        share = jitter * _GRID_JITTER
        for aim in aims:
            if aim > elapsed + min_gap:
                segments = max(1, math.ceil((aim - previous) * (1 + share) / cap))
                size = (aim - previous) / segments
                shift = share * size * rand  # the same for every grid point of a wait
                index = math.floor((elapsed + min_gap + shift - previous) / size) + 1
                if index >= segments:
                    return max(min_gap, aim - elapsed)
                return max(min_gap, previous + index * size - shift - elapsed)
            previous = aim
        # Running longer than ever seen: poll on with gaps that grow, still at most ``cap``.
        past = elapsed - previous
        return min(cap, max(min_gap, past, _MIN_GAP * previous))
