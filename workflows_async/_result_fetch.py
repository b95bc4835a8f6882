"""Fetching a finished workflow's result: retried while the API may still come round.

Invariants: the decision (``result_retry_delay``) is pure; only errors that may heal are retried
(409 ``result_not_ready``, 404 right after the end, 429, 5xx, transport, a 401 after a renewal),
never 400, 403, refused credentials or a closed Session; a server's Retry-After is honoured;
no delay is shorter than ``MIN_DELAY`` (no hot loop) or longer than ``MAX_DELAY``. The loop has
no deadline of its own: the caller's (the wait's) deadline covers it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import (
    AuthenticationError,
    ConflictError,
    CredentialsError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TransportError,
)

__all__ = ["fetch_with_retries", "result_retry_delay"]

T = TypeVar("T")
log = logging.getLogger("workflows_async.waiting")

BASE_DELAY = 0.5  # seconds before the first retry (times 0.5..1 for jitter)
MAX_DELAY = 15.0
MIN_DELAY = 0.05

_RETRYABLE = (ConflictError, NotFoundError, RateLimitError, ServerError, TransportError)


def result_retry_delay(error: BaseException, retries: int, rand: float = 0.5) -> float | None:
    """Seconds to wait before fetching again after ``error`` (``retries`` done so far, ``rand``
    in [0, 1)), or None: give up and raise ``error``."""
    if isinstance(error, CredentialsError):
        return None
    if not isinstance(error, (*_RETRYABLE, AuthenticationError)):
        return None  # 400, 403, 415, decode errors, a closed Session, bugs
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return min(max(float(retry_after), MIN_DELAY), MAX_DELAY * 4)
    ceiling = min(MAX_DELAY, BASE_DELAY * 2.0 ** min(retries, 32))
    return max(MIN_DELAY, ceiling * (0.5 + rand / 2))


async def fetch_with_retries(
    fetch: Callable[[], Awaitable[T]],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> T:
    """``await fetch()`` until it succeeds or fails for good; wrap it in a deadline."""
    retries = 0
    while True:
        try:
            return await fetch()
        except (*_RETRYABLE, AuthenticationError) as exc:
            delay = result_retry_delay(exc, retries, rand())
            if delay is None:
                raise
            log.info("result fetch failed (%s); again in %.2f s", type(exc).__name__, delay)
        retries += 1
        await sleep(delay)
