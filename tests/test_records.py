"""API version 2 at the HTTP seam: recordId instead of caseId, records, mismatches refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_api import Call, FakeAPI

import workflows_async as wa

CASE_ID = "6f1c9a52-0b7e-4c8e-9a51-3f2d6f0e8a11"
REC_ID = "0c5e2a9b-7d41-4f0e-b2a3-5c6d7e8f9a0b"
WF_ID = "9b2f7d4e-1c3a-4b5d-8e6f-7a8b9c0d1e2f"
ORG = wa.OrganizationTokenAuth("tot_test")


@pytest.fixture
async def mocked() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as api:
        yield api


def local(api: FakeAPI, **kwargs: Any) -> wa.Session:
    return wa.Session(api.base_url, ORG, allow_insecure_http=True, **kwargs)


def sent(mocked: FakeAPI, method: str, path: str) -> list[Call]:
    return mocked.calls(method, path)


async def test_v1_run_sends_case_id_and_reads_case_id(mocked: FakeAPI) -> None:
    mocked.post("/workflows/run", payload={"id": WF_ID, "caseId": CASE_ID, "status": "X"})
    async with local(mocked) as session:
        workflow = await session.run_workflow(CASE_ID, "kyc")
    (call,) = sent(mocked, "POST", "/workflows/run")
    assert call.json() == {"caseId": CASE_ID, "workflowDefinitionId": "kyc"}
    assert call.headers["Accept"] == "application/json"
    assert workflow.case_id == CASE_ID and workflow.record_id is None


async def test_v2_run_sends_record_id_and_reads_record_id(mocked: FakeAPI) -> None:
    answer = {"id": WF_ID, "recordId": REC_ID, "status": "RUNNING"}
    mocked.post("/workflows/run", payload=answer)
    mocked.get(f"/workflows/{WF_ID}", payload=answer)
    async with local(mocked, api_version=2) as session:
        workflow = await session.run_workflow(workflow_definition_id="kyc", record_id=REC_ID)
        polled = await session.get_workflow(WF_ID)
    (call,) = sent(mocked, "POST", "/workflows/run")
    assert call.json() == {"recordId": REC_ID, "workflowDefinitionId": "kyc"}
    assert call.headers["Accept"] == "application/json;version=2"
    assert workflow.record_id == REC_ID and workflow.case_id is None
    assert polled.record_id == REC_ID and not session.statuses.is_terminal(polled.status)


async def test_v2_run_without_a_record(mocked: FakeAPI) -> None:
    mocked.post("/workflows/run", payload={"id": WF_ID, "status": "RUNNING"})
    async with local(mocked, api_version=2) as session:
        await session.run_workflow(workflow_definition_id="kyc")
    (call,) = sent(mocked, "POST", "/workflows/run")
    assert call.json() == {"workflowDefinitionId": "kyc"}


@pytest.mark.parametrize(
    ("version", "kwargs", "match"),
    [
        (2, {"case_id": CASE_ID}, "case_id is an API version 1 argument"),
        (None, {"case_id": CASE_ID, "record_id": REC_ID}, "record_id needs API version 2"),
        (1, {"record_id": REC_ID}, "record_id needs API version 2"),
        (1, {}, "case_id is required"),
        (2, {"record_id": "../x"}, "record_id"),
    ],
)
async def test_version_mismatches_are_refused_before_sending(
    mocked: FakeAPI, version: int | None, kwargs: dict[str, Any], match: str
) -> None:
    async with local(mocked, api_version=version) as session:
        with pytest.raises(wa.ConfigurationError, match=match):
            await session.run_workflow(workflow_definition_id="kyc", **kwargs)
        with pytest.raises(wa.ConfigurationError, match=match):
            await session.run_and_wait(workflow_definition_id="kyc", parameters={"a": 1}, **kwargs)
    assert not mocked.requests  # nothing was sent, not even the parameter set


async def test_create_and_get_record_keep_every_field(mocked: FakeAPI) -> None:
    answer = {
        "id": REC_ID,
        "version": 1,
        "createdAt": "2026-05-01T12:00:00.000Z",
        "updatedAt": "2026-05-01T12:00:00.000Z",
        "email": "ada@example.test",
        "personalNumber": "18151210-0000",
        "score": 7,
    }
    mocked.post("/tables/people/records", status=201, payload=answer)
    mocked.get(f"/tables/people/records/{REC_ID}", payload=answer)
    async with local(mocked, api_version=2) as session:
        fields = {"email": "ada@example.test", "personalNumber": "18151210-0000", "score": 7}
        record = await session.create_record("people", fields)
        again = await session.get_record("people", REC_ID)
    (call,) = sent(mocked, "POST", "/tables/people/records")
    assert call.json() == fields
    assert record == again
    assert record.id == REC_ID and record.version == 1
    assert record.created_at == "2026-05-01T12:00:00.000Z" and record.updated_at
    assert record.fields == fields and record["score"] == 7 and dict(record) == answer
    shown = repr(record)
    assert "ada@" not in shown and "18151210" not in shown and "email" in shown


@pytest.mark.parametrize(
    ("table", "fields", "match"),
    [
        ("../auth", {"a": 1}, "table_id"),
        ("people", ["not", "a", "mapping"], "fields"),
        ("people", {"id": "mine"}, "set by the server"),
        ("people", {"when": object()}, "JSON"),
    ],
)
async def test_bad_record_arguments_are_refused_before_sending(
    mocked: FakeAPI, table: str, fields: Any, match: str
) -> None:
    async with local(mocked, api_version=2) as session:
        with pytest.raises(wa.ConfigurationError, match=match):
            await session.create_record(table, fields)
        with pytest.raises(wa.ConfigurationError):
            await session.get_record("people", "a/b")
    assert not mocked.requests
