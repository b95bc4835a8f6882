"""The wire format of the simulated API: content negotiation, request bodies, error bodies.

Invariants: every function here is pure (bytes and header strings in, data out or `Reject`
raised); every error the Simulator answers is the JSON object ``{"error", "message"}``; request
bodies are strict (unknown fields, wrong types and missing required fields are all a 400).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = [
    "CASE_FIELDS",
    "SUPPORTED_VERSIONS",
    "Reject",
    "check_fields",
    "decode_object",
    "encode",
    "error_body",
    "event_type",
    "iso8601",
    "negotiate_version",
    "optional_str",
    "parse_bearer",
    "required_str",
    "required_uuid",
]

SUPPORTED_VERSIONS = frozenset({1, 2})
CASE_FIELDS = (
    "firstName",
    "lastName",
    "personalNumber",
    "email",
    "companyName",
    "companyNumber",
    "companyAddress",
)
_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

encode = msgspec.json.encode


class Reject(Exception):
    """An error answer: status, machine-readable ``error`` code, human ``message``, headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error = error or _ERROR_CODES.get(status, "error")
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        """More fields of the error body, e.g. ``{"permission": "can_run"}`` on a 403."""


def error_body(
    status: int, message: str, error: str | None = None, extra: Mapping[str, Any] | None = None
) -> bytes:
    """The JSON error body every failing call answers with (``extra`` fields added)."""
    code = error or _ERROR_CODES.get(status, "error")
    return encode({**(extra or {}), "error": code, "message": message})


def iso8601(wall: float) -> str:
    """``time.time()`` value -> ``2024-05-01T12:00:00.123Z``."""
    stamp = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def event_type(status: str, *, final: bool) -> str:
    """The webhook ``eventType`` announcing ``status``."""
    if final:
        return "WORKFLOW_COMPLETED"
    if status == "AWAITING":
        return "WORKFLOW_AWAITING"
    return "WORKFLOW_STATUS_CHANGED"


def negotiate_version(accept: str | None) -> int:
    """The API version an ``Accept`` header asks for; no header or ``*/*`` means version 1.

    Media ranges are tried in order; the first JSON-compatible one with a supported version wins.
    """
    if accept is None or not accept.strip():
        return 1
    asked: list[str] = []
    for media_range in accept.split(","):
        media_type, *params = (part.strip() for part in media_range.split(";"))
        if media_type.lower() not in {"application/json", "application/*", "*/*"}:
            continue
        version = "1"
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "version":
                version = value.strip().strip('"')
        if version.isdigit() and int(version) in SUPPORTED_VERSIONS:
            return int(version)
        asked.append(version)
    if asked:
        wanted = ", ".join(asked)
        raise Reject(406, f"API version {wanted} is not supported; supported: 1, 2")
    raise Reject(406, "this API only answers application/json")


def parse_bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not authorization:
        raise Reject(401, "missing Authorization header", error="missing_token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Reject(401, "Authorization must be 'Bearer <accessToken>'", error="invalid_token")
    return token.strip()


def decode_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise Reject(400, "request body is not valid JSON", error="invalid_json") from None
    if not isinstance(value, dict):
        raise Reject(400, "request body must be a JSON object", error="invalid_json")
    return value


def check_fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """400 when ``body`` has a field outside ``allowed``."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Reject(400, f"unknown field(s): {', '.join(unknown)}", error="unknown_field")


def required_str(body: Mapping[str, Any], name: str) -> str:
    """A required, non-empty string field."""
    value = body.get(name)
    if value is None:
        raise Reject(400, f"missing required field: {name}", error="missing_field")
    if not isinstance(value, str) or not value:
        raise Reject(400, f"{name} must be a non-empty string", error="invalid_field")
    return value


def optional_str(body: Mapping[str, Any], name: str) -> str | None:
    """An optional string field; JSON null counts as absent."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise Reject(400, f"{name} must be a string", error="invalid_field")
    return value


def required_uuid(body: Mapping[str, Any], name: str) -> str:
    """A required field holding a UUID, returned in canonical lower-case form."""
    value = required_str(body, name)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Reject(400, f"{name} must be a UUID", error="invalid_field") from None
