"""Fault knobs of the Simulator, and the seeded dice that decide when a knob fires.

Invariants: a share of 0.0 never fires and a share of 1.0 always fires, neither consuming any
randomness; every other decision draws from one ``random.Random(seed)``, so the same seed and the
same order of events make the same choices. Knobs are checked whenever they are set.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Dice", "Faults"]

T = TypeVar("T")

_SHARES = frozenset(
    {
        "drop_webhooks",
        "duplicate_webhooks",
        "error_rate",
        "disconnect_rate",
        "bad_signature_rate",
        "unknown_kid_rate",
        "key_error_rate",
    }
)
_SECONDS = frozenset({"webhook_delay", "retry_after", "latency", "run_response_delay"})


@dataclass
class Faults:
    """What the Simulator does wrong on purpose. Change any field while it runs.

    Shares are probabilities in ``[0, 1]``; seconds are plain wall-clock seconds (never
    multiplied by ``time_scale``).
    """

    drop_webhooks: float = 0.0
    """Share of webhook events never delivered at all (no attempt is made)."""
    duplicate_webhooks: float = 0.0
    """Share of webhook events delivered twice (same eventId, same body)."""
    out_of_order: bool = False
    """Hold a workflow's events; deliver them newest first once the workflow is final."""
    webhook_before_response: bool = False
    """Deliver the run's own status by webhook, and finish that delivery, before answering."""
    webhook_delay: float = 0.0
    """Seconds every event waits before its first delivery attempt."""
    run_response_delay: float = 0.0
    """Seconds ``POST /workflows/run`` holds its answer after the run took effect, so the
    workflow's webhooks (even its final one) can overtake the run response."""
    error_rate: float = 0.0
    """Share of API calls (all but the key endpoint) answered with one of ``error_statuses``."""
    error_statuses: tuple[int, ...] = (429, 500, 502, 503)
    """Statuses picked from for injected errors; 429 and 503 carry ``Retry-After``."""
    retry_after: float = 1.0
    """The ``Retry-After`` value in seconds."""
    error_after_effect: bool = False
    """Let the call take effect, then answer 500 instead of its real response."""
    latency: float = 0.0
    """Seconds added before every answer."""
    disconnect_rate: float = 0.0
    """Share of API calls whose connection is closed halfway through the response body."""
    expire_tokens_early: bool = False
    """Access tokens are issued already expired, whatever ``expiryDuration`` says."""
    bad_signature_rate: float = 0.0
    """Share of webhook events signed with a wrong key under the real kid."""
    unknown_kid_rate: float = 0.0
    """Share of webhook events signed with a key whose kid the key endpoint does not know."""
    key_error_rate: float = 0.0
    """Share of key endpoint calls answered 503."""

    def __setattr__(self, name: str, value: Any) -> None:
        _check(name, value)
        super().__setattr__(name, value)

    def reset(self) -> None:
        """Back to no faults at all."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(Faults, field.name))


def _check(name: str, value: Any) -> None:
    if name in _SHARES:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"Faults.{name} must be a share between 0 and 1, got {value!r}")
    elif name in _SECONDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"Faults.{name} must be a number of seconds, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"Faults.{name} must be finite and >= 0, got {value!r}")
    elif name == "error_statuses":
        if not isinstance(value, tuple) or not value:
            raise ValueError("Faults.error_statuses must be a non-empty tuple of HTTP statuses")
        for status in value:
            if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"Faults.error_statuses holds a non-error status: {status!r}")


class Dice:
    """Seeded random decisions; see the module invariants."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def chance(self, share: float) -> bool:
        """True with probability ``share``."""
        if share <= 0.0:
            return False
        if share >= 1.0:
            return True
        return self._rng.random() < share

    def pick(self, options: Sequence[T]) -> T:
        """One of ``options``; a single option is returned without drawing."""
        if len(options) == 1:
            return options[0]
        return self._rng.choice(options)
