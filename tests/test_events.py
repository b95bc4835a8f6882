"""The typed fast path of ``parse_event`` (issue 16): whatever body it accepts, it reads exactly
what the tolerant parser reads; the shapes the platform sends take it; everything else falls
back to the tolerant parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows_async.events import BadEventError, WebhookEvent, _fast, _tolerant, parse_event

FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = [
    "workflowId",
    "workflow_id",
    "id",
    "status",
    "workflowStatus",
    "caseId",
    "case_id",
    "eventId",
    "event_id",
    "eventType",
    "type",
    "event",
    "timestamp",
]
TEXTS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "COMPLETED", "x" * 256, "x" * 257, "\u00e9t\u00e9", "\ud800"]),
)
SCALARS = st.one_of(
    TEXTS,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
NESTED = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(NAMES), children, max_size=4)
    ),
    max_leaves=8,
)
MEMBERS = st.lists(
    st.tuples(
        st.sampled_from([*NAMES, "workflow", "data"]),
        st.one_of(TEXTS, TEXTS, SCALARS, NESTED),
    ),
    max_size=8,
)


def fields(event: WebhookEvent) -> tuple[Any, ...]:
    return (
        event.workflow_id,
        event.status,
        event.case_id,
        event.event_type,
        event.event_id,
        event.raw,
        event.received_at,
    )


def serialise(members: list[tuple[str, Any]], ascii_only: bool, spaced: bool) -> bytes:
    """An object with the members in this order, duplicates kept (``json.dumps`` of a dict
    could not repeat a name)."""
    sep = ", " if spaced else ","
    text = (
        "{"
        + sep.join(
            f"{json.dumps(name)}:{json.dumps(value, ensure_ascii=ascii_only)}"
            for name, value in members
        )
        + "}"
    )
    return text.encode("utf-8", "surrogatepass")


def agree(raw: bytes) -> WebhookEvent | None:
    fast = _fast(raw, 12.5)
    if fast is None:
        return None
    assert fields(fast) == fields(_tolerant(raw, 12.5)), raw
    return fast


@FUZZ
@given(MEMBERS, st.booleans(), st.booleans())
def test_the_fast_path_reads_what_the_tolerant_parser_reads(
    members: list[tuple[str, Any]], ascii_only: bool, spaced: bool
) -> None:
    agree(serialise(members, ascii_only, spaced))


@FUZZ
@given(st.dictionaries(st.sampled_from(NAMES), TEXTS, max_size=10))
def test_string_members_agree(body: dict[str, str]) -> None:
    agree(json.dumps(body).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_agree(raw: bytes) -> None:
    agree(raw)


PLATFORM_BODIES = [
    {
        "eventId": "e-1",
        "eventType": "WORKFLOW_COMPLETED",
        "workflowId": "w-1",
        "caseId": "c-1",
        "status": "COMPLETED",
        "timestamp": "2026-05-01T10:00:00+00:00",
    },
    {"id": "w-1", "caseId": "c-1", "status": "COMPLETED"},
    {"workflowId": "w-1", "recordId": "r-1", "status": "RUNNING", "eventType": "STATUS"},
    {"workflowId": "w-1", "status": "AWAITING", "data": {"id": "x"}, "tags": [1, 2]},
]


@pytest.mark.parametrize("body", PLATFORM_BODIES)
def test_the_platform_shapes_take_the_fast_path(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    assert agree(raw) is not None
    assert fields(parse_event(raw, received_at=12.5)) == fields(_tolerant(raw, 12.5))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"workflowId": 42, "status": "COMPLETED"}',  # a number: the tolerant parser reads it
        b'{"id": "x", "status": "DONE", "workflow": {"id": "w", "status": "COMPLETED"}}',
        b'{"id": "x", "status": "DONE", "data": {"workflowId": "w", "status": "COMPLETED"}}',
        b'{"workflowId": "w", "status": "COMPLETED", "n": NaN}',
        b'\xef\xbb\xbf{"workflowId": "w", "status": "COMPLETED"}',
        b'{"workflowId": "w", "status": "COMPLETED", "x": ' + b"[" * 40 + b"]" * 40 + b"}",
        b'{"workflowId": "w", "status": "COMPLETED", "x": ' + b'{"a":' * 40 + b"1" + b"}" * 41,
        b' {"workflowId": "w", "status": "COMPLETED", "x": ' + b'{"a":' * 40 + b"1" + b"}" * 41,
        b'{"workflowId": "w"}',
        b"[]",
    ],
)
def test_other_shapes_fall_back_to_the_tolerant_parser(raw: bytes) -> None:
    assert _fast(raw, 0.0) is None
    try:
        expected: Any = fields(_tolerant(raw, 0.0))
    except BadEventError as exc:
        expected = str(exc)
    try:
        got: Any = fields(parse_event(raw))
    except BadEventError as exc:
        got = str(exc)
    assert got == expected
