"""Map an HTTP answer to an exception, gidgethub-style: one pure function, no I/O.

Invariant: the error text holds the method, the path (ids only), the status and at most a
validated short error code from the server's body (``[A-Za-z][A-Za-z0-9_.-]{0,63}``), never free
text of the body, a request body, a token or a header value other than the request id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from . import errors
from ._retry import parse_retry_after

__all__ = ["code_from_body", "error_for_status", "permission_from_body", "request_id"]

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


_PERMISSION = re.compile(r"[a-z][a-z0-9_]{1,63}")
_PERMISSION_IN_TEXT = re.compile(r"\b(can_[a-z0-9_]{1,59})\b")
_PERMISSION_KEYS = ("permission", "requiredPermission", "missingPermission", "scope")


def _named(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # e.g. {"missingPermissions": ["can_run"]}
    if isinstance(value, str) and _PERMISSION.fullmatch(value):
        return value
    return None


def permission_from_body(body: bytes) -> str | None:
    """The permission a 403 body names, or None. Tolerant, and never more than a short name.

    Rule: in a JSON object (or its ``error``/``details`` object), the first of ``permission``,
    ``requiredPermission``, ``missingPermission``, ``scope`` (or their plural with exactly one
    item) that is a lower-case identifier; otherwise the only ``can_*`` word of the body's text
    (two different ones: ambiguous, None). Anything else of the body is never returned.
    """
    text = body[:2000].decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    objects = [data] if isinstance(data, dict) else []
    for nested in ("error", "details"):
        if objects and isinstance(objects[0].get(nested), dict):
            objects.append(objects[0][nested])
    for obj in objects:
        for key in _PERMISSION_KEYS:
            for name in (key, key + "s"):
                if (found := _named(obj.get(name))) is not None:
                    return found
    words = set(_PERMISSION_IN_TEXT.findall(text))
    return words.pop() if len(words) == 1 else None


_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_CODE_KEYS = ("error", "code", "errorCode")


def code_from_body(body: bytes) -> str | None:
    """The server's short error code in a JSON error body, or None.

    Rule: the first of ``error``, ``code``, ``errorCode`` of the object (or of its ``error``
    object, e.g. ``{"error": {"code": "not_found"}}``) that is a short identifier
    (``[A-Za-z][A-Za-z0-9_.-]{0,63}``). Free text (spaces, ``@``, anything longer) is never
    returned: a server may echo personal data in its error body.
    """
    try:
        data = json.loads(body[:4000].decode("utf-8", errors="replace"))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    objects = [data]
    if isinstance(data.get("error"), dict):
        objects.append(data["error"])
    for obj in objects:
        for key in _CODE_KEYS:
            value = obj.get(key)
            if isinstance(value, str) and _CODE.fullmatch(value):
                return value
    return None


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
    common: dict[str, Any] = {
        "method": method,
        "path": path,
        "body_excerpt": _excerpt(body),
        "request_id": request_id(headers),
        "retry_after": retry_after,
        "code": code_from_body(body),
    }
    if cls is errors.PermissionDeniedError:
        return errors.PermissionDeniedError(status, permission=permission_from_body(body), **common)
    return cls(status, **common)
