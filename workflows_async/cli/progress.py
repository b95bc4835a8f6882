"""``batch``'s progress line and summary, as pure functions of counts and times.

Invariants: no I/O and no clock here (the caller passes the elapsed seconds); a rate or an ETA
is shown only once something has finished, so nothing is divided by zero or guessed.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(slots=True)
class Counts:
    """What became of a batch's rows so far."""

    total: int = 0
    """Rows to run in this invocation (skipped and malformed rows not included)."""
    completed: int = 0
    failed: int = 0
    """Workflows that ended with a failure status (a paid check that said no)."""
    api_errors: int = 0
    """Rows that did not end (API error, timeout): rerunning the same command retries them."""
    malformed: int = 0
    skipped: int = 0

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.api_errors


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    whole = max(0, math.ceil(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(counts: Counts, elapsed: float) -> str:
    """E.g. ``12/40 · 10 completed, 1 failed, 1 API errors · 2.4/s · ETA 12s``."""
    text = (
        f"{counts.finished}/{counts.total} · {counts.completed} completed, "
        f"{counts.failed} failed, {counts.api_errors} API errors"
    )
    if counts.finished and elapsed > 0:
        rate = counts.finished / elapsed
        left = max(0, counts.total - counts.finished)
        text += f" · {rate:.1f}/s"
        if left:
            text += f" · ETA {duration(left / rate)}"
    return text


def summary_line(counts: Counts, elapsed: float) -> str:
    """The last line of a batch, on stderr."""
    text = (
        f"batch: {counts.completed} completed, {counts.failed} failed, "
        f"{counts.api_errors} API errors (rerun to retry), {counts.malformed} malformed, "
        f"{counts.skipped} skipped (already finished)"
    )
    return f"{text} in {duration(elapsed)}"
