"""Map an HTTP answer to an exception, gidgethub-style: one pure function, no I/O.

Invariant: the error text holds the method, the path (ids only) and at most an excerpt of the
server's own error body, never a request body, a token or a header value other than the
request id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from . import errors
from ._retry import parse_retry_after

__all__ = ["error_for_status", "request_id"]

_BY_STATUS: dict[int, type[errors.APIError]] = {
    400: errors.BadRequestError,
    401: errors.AuthenticationError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    415: errors.UnsupportedMediaTypeError,
    429: errors.RateLimitError,
}

_REQUEST_ID_HEADERS = ("X-Request-Id", "X-Correlation-Id", "Request-Id")


def request_id(headers: Mapping[str, str]) -> str | None:
    """The server's id for a request, from the first request-id header it sent."""
    return next((headers[h] for h in _REQUEST_ID_HEADERS if h in headers), None)


def _excerpt(body: bytes) -> str:
    text = body[:400].decode("utf-8", errors="replace")
    return " ".join(text.split())[:200]


def error_for_status(
    status: int,
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | None = None,
) -> errors.APIError | None:
    """The exception for a non-2xx answer (redirects included: they are not followed), or None."""
    if 200 <= status < 300:
        return None
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = errors.ServerError if status >= 500 else errors.APIError
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    return cls(
        status,
        method=method,
        path=path,
        body_excerpt=_excerpt(body),
        request_id=request_id(headers),
        retry_after=retry_after,
    )
