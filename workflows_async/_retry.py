"""When to retry a request, and how long to wait: pure decisions, no I/O, no clock reads.

Invariants: a request that may have taken effect (a POST that reached the server and was not
answered 429) is never retried; a Retry-After above the policy's cap is never slept on; a delay
is never negative; parsing a header never raises.

Why the retry loop is ours (``HttpClient._send``, a dozen lines) and not the ``backoff``
package's: every delay is decided here (full jitter, or the server's Retry-After honoured in
full or not at all against the call's deadline, where ``backoff`` would cut a wait short to
fit ``max_time``), so ``backoff`` was left counting tries. It sleeps with ``asyncio.sleep`` and
measures ``max_time`` on ``datetime.now()``, neither of which can be swapped, so retry tests
slept for real, and a wall-clock jump could stretch or cut a call's time budget; and its
per-call bookkeeping was most of the client's overhead next to raw aiohttp (benchmarks/README).
The loop takes its ``sleep`` and monotonic ``clock`` from the HttpClient instead.
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime

from .errors import ConfigurationError

__all__ = ["RetryPolicy", "parse_retry_after"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Statuses that prove the server did not act on the request, so even a POST may be resent.
# Not 503: a gateway may answer 503 after it forwarded the request.
NOT_APPLIED_STATUSES = frozenset({429})
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # ASCII digits only, unlike str.isdigit


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed requests are retried: exponential backoff with full jitter.

    ``max_attempts`` counts the first try; ``max_time`` bounds the whole call including sleeps;
    a ``Retry-After`` longer than ``max_retry_after`` raises :class:`RateLimitError` at once.
    ``RetryPolicy.none()`` disables retries.
    """

    max_attempts: int = 4
    max_time: float = 30.0
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0
    retry_statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("RetryPolicy.max_attempts must be at least 1")
        for name in ("max_time", "base_delay", "max_delay", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"RetryPolicy.{name} must not be negative")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    def retry_status(self, method: str, status: int, *, replayable: bool | None = None) -> bool:
        """May a request answered with ``status`` be sent again?

        ``replayable`` says that sending the request twice has no effect to duplicate (a GET,
        or a token request); by default it follows the method.
        """
        if status not in self.retry_statuses:
            return False
        if replayable is None:
            replayable = method.upper() in IDEMPOTENT_METHODS
        return replayable or status in NOT_APPLIED_STATUSES

    def retry_transport(
        self, method: str, *, connected: bool, replayable: bool | None = None
    ) -> bool:
        """May a request that got no answer be sent again?

        ``connected`` is False only when the connection was never established, the one case in
        which a POST surely did not reach the server.
        """
        if replayable is None:
            replayable = method.upper() in IDEMPOTENT_METHODS
        return replayable or not connected

    @staticmethod
    def outcome_unknown(status: int) -> bool:
        """Does ``status``, answered to a request that is not replayable, leave its effect
        unknown? A 5xx may come from a gateway after it forwarded the request. A 408 is
        counted too: it may come from any hop, and one that is not the API cannot vouch that
        the API never got the request. Every other status is the server's own answer."""
        return status >= 500 or status == 408

    def retry_after_allowed(self, retry_after: float | None) -> bool:
        """Is a server-requested wait short enough to sleep on?"""
        return retry_after is None or retry_after <= self.max_retry_after

    def backoff_delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Full-jitter delay before retry number ``retry`` (0 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * (2**retry))
        return float(ceiling * rand())

    def delay(
        self, retry: int, retry_after: float | None, rand: Callable[[], float] = random.random
    ) -> float:
        """The wait before retry number ``retry``: the server's Retry-After when it gave one."""
        if retry_after is not None:
            return max(0.0, retry_after)
        return self.backoff_delay(retry, rand)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Delta-seconds may be fractional (``0.01``); only ASCII digits count. Returns None when the
    header is absent or unreadable (garbage, NaN, infinity, a negative number); a date in the
    past gives 0. Never raises, whatever the server sent.
    """
    if not isinstance(value, str):
        return None
    text = value.strip(" \t")
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now if now is not None else datetime.now(UTC)
        seconds = (when - current).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None
