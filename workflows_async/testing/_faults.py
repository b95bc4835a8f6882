"""Fault knobs of the Simulator, and the seeded dice that decide when a knob fires.

Invariants: a share of 0.0 never fires and a share of 1.0 always fires, neither consuming any
randomness; every other decision draws from one ``random.Random(seed)``, so the same seed and the
same order of events make the same choices. Knobs are checked whenever they are set.
``expire_tokens_early`` is a deprecated alias of ``issue_expired_tokens`` (read, set, or passed
to the constructor, it warns and acts on the new field).
"""

from __future__ import annotations

import dataclasses
import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import InitVar, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

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
        "revoke_tokens_rate",
    }
)
_SECONDS = frozenset(
    {
        "webhook_delay",
        "retry_after",
        "latency",
        "run_response_delay",
        "key_publish_delay",
        "result_delay",
        "revoke_tokens_every",
    }
)
_DEPRECATED = {"expire_tokens_early": "issue_expired_tokens"}


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
    post_error_statuses: tuple[int, ...] | None = None
    """Statuses picked from for errors injected into POSTs (None: ``error_statuses``), e.g.
    ``(429, 503)``: the two a client may take as proof that a POST did not take effect."""
    retry_after: float = 1.0
    """The ``Retry-After`` value in seconds."""
    error_after_effect: bool = False
    """Let the call take effect, then answer ``error_after_effect_status`` instead of its real
    response (the injected errors of ``error_rate`` then all come after the effect)."""
    error_after_effect_status: int = 500
    """The status of an after-effect error: 500, or e.g. 503 for a gateway that answers 503
    after it forwarded the request (429 and 503 carry ``Retry-After``)."""
    latency: float = 0.0
    """Seconds added before every answer."""
    disconnect_rate: float = 0.0
    """Share of API calls whose connection is closed halfway through the response body."""
    issue_expired_tokens: bool = False
    """Access tokens are issued already expired, whatever ``expiryDuration`` says (formerly
    ``expire_tokens_early``, still accepted with a DeprecationWarning)."""
    revoke_tokens_rate: float = 0.0
    """Share of token-bearing API calls before which every token issued so far is revoked (as
    `Simulator.revoke_tokens`): that call, and every later one with an old token, gets 401."""
    revoke_tokens_every: float = 0.0
    """Mean seconds between revocations of every token issued so far, at random times (seeded
    exponential gaps; 0: off): the model of "all tokens revoked every few seconds", whose rate
    does not grow with the number of calls in flight as ``revoke_tokens_rate`` does."""
    bad_signature_rate: float = 0.0
    """Share of webhook events signed with a wrong key under the real kid."""
    unknown_kid_rate: float = 0.0
    """Share of webhook events signed with a key whose kid the key endpoint does not know."""
    key_error_rate: float = 0.0
    """Share of key endpoint calls answered 503."""
    key_publish_delay: float = 0.0
    """Seconds after `Simulator.rotate_key` during which the new kid already signs but the key
    endpoint still answers 404 for it (the default of ``rotate_key(publish_delay=None)``)."""
    result_delay: float = 0.0
    """Seconds after a workflow's final status during which ``GET /workflows/{id}/result``
    still answers 409 ``result_not_ready``."""
    expire_tokens_early: InitVar[bool | None] = None
    """Deprecated alias of ``issue_expired_tokens``."""

    def __post_init__(self, expire_tokens_early: bool | None) -> None:
        if expire_tokens_early is not None:
            setattr(self, "expire_tokens_early", expire_tokens_early)  # noqa: B010 - warns

    def __setattr__(self, name: str, value: Any) -> None:
        name = _renamed(name)
        _check(name, value)
        super().__setattr__(name, value)

    if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt knob is still an error

        def __getattr__(self, name: str) -> Any:  # reached only for names not found otherwise
            if name in _DEPRECATED:
                return getattr(self, _renamed(name))
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def reset(self) -> None:
        """Back to no faults at all."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(Faults, field.name))


def _renamed(name: str) -> str:
    new = _DEPRECATED.get(name)
    if new is None:
        return name
    warnings.warn(f"Faults.{name} is deprecated; use Faults.{new}", DeprecationWarning, 3)
    return new


def _check_statuses(name: str, value: Any) -> None:
    if not isinstance(value, tuple) or not value:
        raise ValueError(f"Faults.{name} must be a non-empty tuple of HTTP statuses")
    for status in value:
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"Faults.{name} holds a non-error status: {status!r}")


def _check(name: str, value: Any) -> None:
    if name in _SHARES:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"Faults.{name} must be a share between 0 and 1, got {value!r}")
    elif name in _SECONDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"Faults.{name} must be a number of seconds, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"Faults.{name} must be finite and >= 0, got {value!r}")
    elif name == "error_statuses" or (name == "post_error_statuses" and value is not None):
        _check_statuses(name, value)
    elif name == "error_after_effect_status":
        _check_statuses(name, (value,))


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

    def gap(self, mean: float) -> float:
        """A random gap of ``mean`` seconds on average (exponentially distributed)."""
        return self._rng.expovariate(1.0 / mean)

    def pick(self, options: Sequence[T]) -> T:
        """One of ``options``; a single option is returned without drawing."""
        if len(options) == 1:
            return options[0]
        return self._rng.choice(options)


# The InitVar's class attribute would shadow `__getattr__`; the generated __init__ keeps its
# own copy of the default, so the alias is served by `__getattr__` alone.
delattr(Faults, "expire_tokens_early")
