"""The execution API (POST /workflows) at the HTTP seam: body, checks before sending, answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fake_api import Call, FakeAPI

import workflows_async as wa
from workflows_async.executions import check_expires_at

EX_ID = "3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d"
REC_ID = "0c5e2a9b-7d41-4f0e-b2a3-5c6d7e8f9a0b"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ANSWER = {
    "id": EX_ID,
    "workspaceId": "ws-1",
    "workflowDefinitionId": "kyc",
    "parameters": {"personalNumber": "18151210-0000"},
    "name": "KYC",
    "revision": 3,
    "status": "RUNNING",
    "locale": "en",
    "expiresAt": "2026-05-02T12:00:00.000Z",
    "executionType": "BACKGROUND",
    "executionVersion": 2,
    "futureField": True,
}


@pytest.fixture
async def mocked() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as api:
        yield api


@pytest.fixture
async def session(mocked: FakeAPI) -> AsyncIterator[wa.Session]:
    auth = wa.OrganizationTokenAuth("tot_x")
    retry = wa.RetryPolicy(max_attempts=1)
    async with wa.Session(
        mocked.base_url, auth, api_version=2, allow_insecure_http=True, retry=retry
    ) as s:
        s.wall_clock = lambda: NOW
        yield s


def sent(mocked: FakeAPI, method: str, path: str) -> list[Call]:
    return mocked.calls(method, path)


async def test_start_execution_body_and_typed_answer(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.post("/workflows", status=201, payload=ANSWER)
    execution = await session.start_execution(
        "kyc",
        locale="en",
        parameters={"personalNumber": "18151210-0000"},
        expires_at=NOW + timedelta(days=1),
        record_id=REC_ID,
    )
    (call,) = sent(mocked, "POST", "/workflows")
    assert call.json() == {
        "workflowDefinitionId": "kyc",
        "locale": "en",
        "parameters": {"personalNumber": "18151210-0000"},
        "expiresAt": "2026-05-02T12:00:00.000Z",
        "recordId": REC_ID,
    }
    assert call.headers["Authorization"] == "tot_x"
    assert execution.id == EX_ID and execution.workspace_id == "ws-1"
    assert execution.workflow_definition_id == "kyc" and execution.name == "KYC"
    assert execution.revision == 3 and execution.execution_version == 2
    assert execution.status == wa.WorkflowStatus.RUNNING and not session.statuses.is_terminal(
        execution.status
    )
    assert execution.locale == "en" and execution.execution_type == "BACKGROUND"
    assert execution.expires == NOW + timedelta(days=1)
    assert "18151210" not in repr(execution) and "personalNumber" in repr(execution)


async def test_optional_fields_are_not_sent(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.post("/workflows", status=201, payload={"id": EX_ID, "status": "RUNNING"})
    await session.start_execution("kyc", locale="sv", parameters={})
    (call,) = sent(mocked, "POST", "/workflows")
    assert call.json() == {
        "workflowDefinitionId": "kyc",
        "locale": "sv",
        "parameters": {},
    }


async def test_ui_execution_keeps_link_and_token_and_masks_them(
    session: wa.Session, mocked: FakeAPI
) -> None:
    answer = {**ANSWER, "executionType": "UI", "link": "https://ui.test/x?t=SECRETLINK",
              "token": "SECRETTOKEN"}  # fmt: skip
    mocked.post("/workflows", status=201, payload=answer)
    execution = await session.start_execution("kyc", locale="en", parameters={})
    assert execution.link == "https://ui.test/x?t=SECRETLINK" and execution.token == "SECRETTOKEN"
    assert "SECRET" not in repr(execution) and "SECRET" not in str(execution)


@pytest.mark.parametrize(
    ("expires_at", "ok"),
    [
        (NOW + timedelta(minutes=29, seconds=59), False),
        (NOW + timedelta(minutes=30), True),
        (NOW + timedelta(days=30), True),
        (NOW + timedelta(days=30, seconds=1), False),
        (NOW - timedelta(days=1), False),
        (datetime(2026, 5, 2, 14, 0, tzinfo=timezone(timedelta(hours=2))), True),
        (datetime(2026, 5, 2, 12, 0), False),  # naive
        ("2026-05-02T12:00:00Z", False),
    ],
)
def test_expires_at_bounds(expires_at: Any, ok: bool) -> None:
    if ok:
        assert check_expires_at(expires_at, NOW).tzinfo is UTC
    else:
        with pytest.raises(wa.ConfigurationError, match="expires_at"):
            check_expires_at(expires_at, NOW)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"expires_at": NOW + timedelta(minutes=5)}, "30 minutes"),
        ({"expires_at": datetime(2026, 5, 2)}, "timezone-aware"),
        ({"locale": ""}, "locale"),
        ({"parameters": None}, "parameters"),
        ({"parameters": {"x": object()}}, "parameters"),
        ({"record_id": "../x"}, "record_id"),
        ({"workflow_definition_id": ""}, "workflow_definition_id"),
    ],
)
async def test_bad_execution_arguments_refused_before_sending(
    session: wa.Session, mocked: FakeAPI, kwargs: dict[str, Any], match: str
) -> None:
    arguments: dict[str, Any] = {"workflow_definition_id": "kyc", "locale": "en", "parameters": {}}
    arguments.update(kwargs)
    with pytest.raises(wa.ConfigurationError, match=match):
        await session.start_execution(**arguments)
    with pytest.raises(wa.ConfigurationError, match=match):
        await session.execute_and_wait(**arguments)
    assert not mocked.requests


async def test_execution_403_names_can_run(session: wa.Session, mocked: FakeAPI) -> None:
    body = {"error": "forbidden", "message": "no", "permission": "can_run"}
    mocked.post("/workflows", status=403, payload=body)
    with pytest.raises(wa.PermissionDeniedError) as caught:
        await session.start_execution("kyc", locale="en", parameters={"secret": "v"})
    assert caught.value.permission == "can_run"
    assert str(caught.value) == "POST /workflows answered 403 forbidden: missing permission can_run"


async def test_get_execution(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{EX_ID}", payload={**ANSWER, "status": "COMPLETED"})
    execution = await session.get_execution(EX_ID)
    assert (
        session.statuses.is_terminal(execution.status)
        and execution.parameters == ANSWER["parameters"]
    )


async def test_execute_and_wait_finished_in_the_answer(
    session: wa.Session, mocked: FakeAPI
) -> None:
    mocked.post("/workflows", status=201, payload={**ANSWER, "status": "COMPLETED"})
    mocked.get(f"/workflows/{EX_ID}/result", payload={"createdDate": "x", "score": 1})
    outcome = await session.execute_and_wait("kyc", locale="en", parameters={}, timeout=10)
    assert outcome.channel == wa.Channel.RUN and outcome.result is not None
    assert outcome.result["score"] == 1 and outcome.execution.id == EX_ID
    assert outcome.workflow.id == EX_ID and outcome.succeeded
    assert "18151210" not in repr(outcome) and "personalNumber" in repr(outcome)
