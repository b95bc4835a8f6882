"""Registry, event parsing and the TTL map: pure or nearly (futures need a loop)."""

from __future__ import annotations

import asyncio
import json

import pytest

import workflows_async as wa
from workflows_async._ttl import TTLMap
from workflows_async.events import BadEventError, parse_event
from workflows_async.registry import Registry
from workflows_async.statuses import StatusSet


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def event(workflow_id: str, status: str, event_id: str | None = None) -> wa.WebhookEvent:
    body: dict[str, str] = {"workflowId": workflow_id, "status": status}
    if event_id:
        body["eventId"] = event_id
    return parse_event(json.dumps(body).encode())


def test_parse_is_tolerant_and_keeps_the_raw_body() -> None:
    raw = b'{"id": "w1", "status": "COMPLETED", "caseId": "c1", "eventType": "T", "x": [1]}'
    parsed = parse_event(raw)
    assert (parsed.workflow_id, parsed.status, parsed.case_id, parsed.event_type) == (
        "w1",
        "COMPLETED",
        "c1",
        "T",
    )
    assert parsed.raw == raw and parsed.payload["x"] == [1]
    nested = parse_event(b'{"eventId": "e", "data": {"workflowId": "w2", "status": "AWAITING"}}')
    assert nested.workflow_id == "w2" and nested.event_id == "e"
    assert nested.dedup_key == "id:e"
    assert event("w", "completed").dedup_key == "ws:w:COMPLETED"


@pytest.mark.parametrize("raw", [b"", b"nope", b"[]", b'"s"', b'{"status": "X"}', b'{"id": "w"}'])
def test_parse_refuses_what_is_not_an_event(raw: bytes) -> None:
    with pytest.raises(BadEventError):
        parse_event(raw)


async def test_early_event_resolves_at_registration() -> None:
    registry = Registry(StatusSet())
    assert registry.accept(event("w1", "COMPLETED"))
    assert registry.deliver(event("w1", "COMPLETED"))
    future = registry.register("w1")
    assert future.done() and future.result().channel is wa.Channel.WEBHOOK
    assert registry.pending() == []


async def test_non_terminal_events_do_not_resolve() -> None:
    registry = Registry(StatusSet())
    future = registry.register("w1")
    assert not registry.deliver(event("w1", "AWAITING"))
    assert not future.done()
    registry.deliver(event("w1", "FAILED"))
    assert future.result().workflow.status == "FAILED"


async def test_duplicates_are_dispatched_once() -> None:
    registry = Registry(StatusSet())
    assert registry.accept(event("w1", "COMPLETED", "e1"))
    assert not registry.accept(event("w1", "COMPLETED", "e1"))
    assert registry.accept(event("w2", "COMPLETED"))
    assert not registry.accept(event("w2", "COMPLETED"))
    assert registry.duplicates == 2 and registry.dispatched == 2


async def test_first_terminal_wins_and_unregister_cleans_up() -> None:
    registry = Registry(StatusSet())
    a, b = registry.register("w"), registry.register("w")
    assert registry.unregister("w", a) is False
    registry.deliver(event("w", "COMPLETED"))
    registry.deliver(event("w", "FAILED"))
    assert b.result().workflow.status == "COMPLETED"
    assert not a.done()
    assert registry.unregister("w", b) is True
    assert len(registry) == 0


async def test_one_or_many_waiters_of_a_workflow_come_and_go() -> None:
    """One waiter is held without a list; a second makes one; each leaves alone."""
    registry = Registry(StatusSet())
    a = registry.register("w")
    stranger = asyncio.get_running_loop().create_future()
    assert registry.unregister("w", stranger) is False  # not its waiter: "w" still waited for
    assert registry.pending() == ["w"]
    b, c = registry.register("w"), registry.register("w")
    assert registry.unregister("w", b) is False
    registry.fail("w", RuntimeError("gone"))
    assert isinstance(a.exception(), RuntimeError) and isinstance(c.exception(), RuntimeError)
    assert not b.done() and len(registry) == 0
    d = registry.register("w")
    assert registry.unregister("w", d) is True and "w" not in registry
    e = registry.register("x")
    registry.fail_all(lambda wid: KeyError(wid))
    assert isinstance(e.exception(), KeyError) and len(registry) == 0


def test_ttl_map_expires_and_bounds() -> None:
    clock = Clock()
    ttl: TTLMap[int] = TTLMap(10, 3, clock)
    for i in range(5):
        ttl.put(str(i), i)
    assert len(ttl) == 3 and ttl.get("0") is None and ttl.get("4") == 4
    assert not ttl.add("4", 9)
    clock.now = 11
    assert ttl.get("4") is None
    assert ttl.add("4", 9) and ttl.pop("4") == 9


def test_an_envelope_id_is_the_event_not_the_workflow() -> None:
    parsed = parse_event(
        b'{"id": "evt-123", "data": {"workflowId": "wf-9", "status": "COMPLETED"}}'
    )
    assert (parsed.workflow_id, parsed.event_id, parsed.status) == ("wf-9", "evt-123", "COMPLETED")
    delivery = parse_event(
        b'{"status": "DELIVERED", "workflow": {"id": "wf-1", "status": "COMPLETED"}}'
    )
    assert (delivery.workflow_id, delivery.status) == ("wf-1", "COMPLETED")
    flat = parse_event(b'{"id": "wf-2", "status": "AWAITING", "eventId": "e-2"}')
    assert (flat.workflow_id, flat.event_id) == ("wf-2", "e-2")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"workflowId":"W1","status":"AWAITING","data":{"status":"COMPLETED"}}',
            ("W1", "AWAITING"),
        ),
        (
            b'{"workflowId":"W1","status":"IN_PROGRESS","data":{"workflowId":"W2","status":"COMPLETED"}}',
            ("W1", "IN_PROGRESS"),
        ),
        (
            b'{"id":"W1","status":"AWAITING","data":{"id":"doc-5","status":"REJECTED"}}',
            ("W1", "AWAITING"),
        ),
        (b'{"data":{"id":"W3","status":"COMPLETED"}}', ("W3", "COMPLETED")),
    ],
)
def test_the_top_level_speaks_for_the_workflow_when_it_names_it(
    raw: bytes, expected: tuple[str, str]
) -> None:
    parsed = parse_event(raw)
    assert (parsed.workflow_id, parsed.status) == expected


@pytest.mark.parametrize(
    "raw",
    [
        # Issue 10 item 11: the status of another object is not the workflow's. (W4 used to
        # take the status of a nested data object that names nothing.)
        b'{"workflowId":"W4","data":{"status":"COMPLETED"}}',
        b'{"workflowId":"A","workflow":{"id":"B","status":"COMPLETED"}}',
    ],
)
def test_id_and_status_come_from_one_object(raw: bytes) -> None:
    with pytest.raises(BadEventError, match="status"):
        parse_event(raw)


def test_rich_reprs_mask_what_repr_masks() -> None:
    case = wa.Case(id="c1", first_name="Ann", personal_number="19121210-1234", email="a@x.io")
    token = wa.Token(access_token="SECRET-A", refresh_token="SECRET-R")
    params = wa.Parameters(id="p1", parameters={"ssn": "19121210-1234"})
    event = parse_event(b'{"workflowId": "w", "status": "X", "email": "a@x.io"}')
    for obj in (case, token, params, event):
        shown = repr(list(obj.__rich_repr__())) + repr(obj) + str(obj)
        for secret in ("Ann", "19121210-1234", "a@x.io", "SECRET"):
            assert secret not in shown, (type(obj).__name__, secret)
    assert ("id", "c1") in list(case.__rich_repr__())
