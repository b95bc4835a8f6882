"""Webhook events: tolerant parsing of the platform's (undocumented) JSON body. Pure, no I/O.

Invariants: an event always has a workflow id and a status, both from one JSON object (else
:class:`BadEventError`, the only exception ``parse_event`` raises, whatever the bytes); the
raw body is kept byte for byte; the dedup key is the event id when the platform sent one, else
``(workflow id, status)``; the typed fast path answers only for the plain shapes it fully
understands, and then exactly what the tolerant parser would (else the tolerant parser runs).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec

from .errors import WebhookError

__all__ = ["REPLAY_WINDOW", "BadEventError", "WebhookEvent", "event_size", "parse_event"]

_MAX_FIELD = 256

REPLAY_WINDOW = 7 * 86400.0
"""Seconds a dispatched event (and a terminal workflow) is remembered, so that a replay of a
captured webhook is harmless: the platform signs no timestamp, a copy verifies forever."""


class BadEventError(WebhookError):
    """The webhook body is not a JSON object with a workflow id and a status."""


class WebhookEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A verified webhook: what it says about a workflow, plus the raw body as received.

    Not tracked by the garbage collector (``gc=False``): its fields are strings, bytes and a
    float, so it can be part of no reference cycle, and the remembered events (a bus's and a
    registry's memory) cost a full collection nothing."""

    workflow_id: str
    status: str
    case_id: str | None = None
    event_type: str | None = None
    event_id: str | None = None
    raw: bytes = b""
    received_at: float = 0.0
    trace_context: str | None = None
    """The W3C ``traceparent`` of the OpenTelemetry span that received it (None without
    tracing): it travels with the event over the bus, so a wait in any process links to it."""

    @property
    def dedup_key(self) -> str:
        """Identifies duplicates: retries of one delivery share it."""
        if self.event_id:
            return f"id:{self.event_id}"
        return f"ws:{self.workflow_id}:{self.status.upper()}"

    @property
    def payload(self) -> dict[str, Any]:
        """The body decoded as a dict (every field the platform sent)."""
        decoded = json.loads(self.raw) if self.raw else {}
        return decoded if isinstance(decoded, dict) else {}

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """The routing fields only: the raw body may hold personal data."""
        return [
            ("workflow_id", self.workflow_id),
            ("status", self.status),
            ("event_type", self.event_type),
            ("event_id", self.event_id),
        ]

    def __repr__(self) -> str:
        return (
            f"WebhookEvent(workflow_id={self.workflow_id!r}, status={self.status!r},"
            f" event_type={self.event_type!r}, event_id={self.event_id!r})"
        )


def event_size(event: WebhookEvent) -> int:
    """What keeping ``event`` in memory costs, roughly: its raw body and its fields."""
    return (
        len(event.raw)
        + len(event.workflow_id)
        + len(event.status)
        + len(event.case_id or "")
        + len(event.event_type or "")
        + len(event.event_id or "")
        + 200
    )


def _text(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= _MAX_FIELD:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**_MAX_FIELD:
        return str(value)
    return None


_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_FIELD)]
"""A member the tolerant parser would take as it is (``_text``): any other string fails the
typed decode, and then the tolerant parser (which skips it) decides."""


class _Flat(msgspec.Struct, gc=False):
    """A body whose routing members are all strings of 1 to 256 characters (or null) at the top
    level: every name the tolerant parser looks at there, so both read the same members."""

    workflowId: _Text | None = None
    workflow_id: _Text | None = None
    id: _Text | None = None
    status: _Text | None = None
    workflowStatus: _Text | None = None
    caseId: _Text | None = None
    case_id: _Text | None = None
    eventId: _Text | None = None
    event_id: _Text | None = None
    eventType: _Text | None = None
    type: _Text | None = None
    event: _Text | None = None
    workflow: Any = None
    data: Any = None


_FLAT = msgspec.json.Decoder(_Flat)
_MAX_FAST_BRACKETS = 32
"""More ``{``/``[`` than this (anywhere, even in strings) and the tolerant parser decides:
json's own depth limit (a RecursionError, hence BadEventError) can then never differ."""


def _fast(raw: bytes, received_at: float) -> WebhookEvent | None:
    """The common shapes (the workflow's ``workflowId``/``id`` and ``status`` at the top level,
    strings only) decoded by one typed msgspec decoder, or None for anything else (then the
    tolerant parser reads it). Whatever it returns, :func:`_tolerant` returns too."""
    # Counted only when there is anything to count: a flat body (no "[", no "{" but maybe its
    # first byte) is told by two quick looks, and holds at most one.
    # (rfind: the cheapest single-byte look CPython offers; the last "{" of a flat body is its
    # first byte.)
    if (raw.rfind(b"{") > 0 or raw.rfind(b"[") >= 0) and (
        raw.count(b"{") + raw.count(b"[") > _MAX_FAST_BRACKETS
    ):
        return None
    try:
        body = _FLAT.decode(raw)
    except msgspec.DecodeError:  # not UTF-8 JSON, not an object, a member of another type,
        return None  # or a string the tolerant parser would skip (empty, too long)
    named = body.workflowId or body.workflow_id
    if named is None and (isinstance(body.workflow, dict) or isinstance(body.data, dict)):
        return None  # the workflow may sit in a nested object: the tolerant parser decides
    workflow_id = named or body.id
    status = body.status or body.workflowStatus
    if workflow_id is None or status is None:
        return None  # the tolerant parser raises the right BadEventError
    return WebhookEvent(
        workflow_id=workflow_id,
        status=status,
        case_id=body.caseId or body.case_id,
        event_type=body.eventType or body.type or body.event,
        event_id=body.eventId or body.event_id,
        raw=bytes(raw),
        received_at=received_at,
    )


def parse_event(raw: bytes, *, received_at: float = 0.0) -> WebhookEvent:
    """Read a webhook body: workflow id under ``workflowId`` or ``id`` (or nested under
    ``workflow``/``data``), ``status``, optional ``caseId``, ``eventType``, ``eventId``.

    The id and the status always come from one object, the one that speaks for the workflow:
    the top level when it names the workflow (``workflowId``), else a nested ``workflow``
    object with an id, else a ``data`` object naming it, else the top level's plain ``id``.
    A status found only elsewhere (a document's, a delivery's) is not the workflow's:
    :class:`BadEventError`. The case id comes from that object too, or from the top-level
    envelope when the workflow sits in a nested object and only one nested object names
    anything (then the envelope can only be about that workflow).
    """
    return _fast(raw, received_at) or _tolerant(raw, received_at)


def _tolerant(raw: bytes, received_at: float) -> WebhookEvent:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise BadEventError("body is not JSON") from None
    if not isinstance(body, dict):
        raise BadEventError("body is not a JSON object")
    workflow = body.get("workflow")
    data = body.get("data")
    workflow = workflow if isinstance(workflow, dict) else None
    data = data if isinstance(data, dict) else None

    def has(source: dict[str, Any] | None, *names: str) -> bool:
        return source is not None and any(_text(source.get(name)) for name in names)

    source: dict[str, Any] = body
    if has(body, "workflowId", "workflow_id"):
        source = body
    elif workflow is not None and has(workflow, "workflowId", "workflow_id", "id"):
        source = workflow
    elif data is not None and (
        has(data, "workflowId", "workflow_id") or (not has(body, "id") and has(data, "id"))
    ):
        source = data

    def pick(candidate: dict[str, Any], *names: str) -> str | None:
        for name in names:
            found = _text(candidate.get(name))
            if found is not None:
                return found
        return None

    workflow_id = pick(source, "workflowId", "workflow_id", "id")
    if workflow_id is None:
        raise BadEventError("no workflow id (workflowId or id)")
    status = pick(source, "status", "workflowStatus")
    if status is None:
        raise BadEventError("no status beside the workflow id")
    case_id = pick(source, "caseId", "case_id")
    if case_id is None and source is not body:
        naming = [o for o in (workflow, data) if has(o, "workflowId", "workflow_id", "id")]
        if len(naming) == 1:
            case_id = pick(body, "caseId", "case_id")
    event_id = pick(body, "eventId", "event_id")
    if event_id is None and source is not body:
        event_id = _text(body.get("id"))  # an envelope's own id names the event
    event_type = pick(body, "eventType", "type", "event")
    if event_type is None and source is not body:
        event_type = pick(source, "eventType", "type", "event")
    return WebhookEvent(
        workflow_id=workflow_id,
        status=status,
        case_id=case_id,
        event_type=event_type,
        event_id=event_id,
        raw=bytes(raw),
        received_at=received_at,
    )
