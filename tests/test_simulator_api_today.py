"""Today's API against the Simulator over real sockets: organization tokens and scopes, version
2 runs for records, records tables, and executions finished by webhook, by poll, or resumed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from eventually import eventually
from stack import FAST_POLL, receiver

import workflows_async as wa
from workflows_async.testing import Faults, Simulator, WorkflowDefinition


@dataclass
class Env:
    sim: Simulator
    session: wa.Session
    token: str

    def polls(self) -> int:
        return self.sim.calls_by_route["GET /workflows/{id}"]


@asynccontextmanager
async def today(
    *,
    scopes: Iterable[str] | None = None,
    faults: Faults | None = None,
    webhooks: bool = True,
    api_version: int | None = 2,
) -> AsyncIterator[Env]:
    async with Simulator(time_scale=0.02, seed=5, faults=faults) as sim:
        sim.define("slow", WorkflowDefinition(duration=100_000.0))
        sim.define("kyc-ui", WorkflowDefinition(execution_type="UI"))
        token = sim.organization_token(scopes)
        session = wa.Session(
            sim.base_url,
            wa.OrganizationTokenAuth(token),
            allow_insecure_http=True,
            api_version=api_version,
            poll=FAST_POLL,
            retry=wa.RetryPolicy(max_attempts=1),
        )
        async with receiver(session) as url:
            if webhooks:
                sim.add_webhook_url(url)
            async with session:
                yield Env(sim, session, token)


async def raw(sim: Simulator, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, sim.base_url + path, **kwargs) as response,
    ):
        return response.status, await response.json(content_type=None)


# -- organization tokens and scopes ---------------------------------------------------------


async def test_simulator_takes_organization_tokens_as_they_are_and_jwts_with_bearer() -> None:
    async with Simulator() as sim:
        org = sim.organization_token()
        status, _ = await raw(sim, "GET", "/tables/customers/records/x", headers={
            "Authorization": org})  # fmt: skip
        assert status == 404  # authenticated: the record just does not exist
        status, body = await raw(sim, "GET", "/tables/customers/records/x", headers={
            "Authorization": f"Bearer {org}"})  # fmt: skip
        assert status == 401 and "without 'Bearer '" in body["message"]
        _, tokens = await raw(sim, "POST", "/auth/authorize", json={
            "key": sim.key, "secret": sim.secret})  # fmt: skip
        status, body = await raw(sim, "GET", "/tables/customers/records/x", headers={
            "Authorization": tokens["accessToken"]})  # fmt: skip
        assert status == 401 and "Bearer <accessToken>" in body["message"]


async def test_revoked_organization_token_is_a_final_credentials_error() -> None:
    async with today() as env:
        env.sim.revoke_organization_token(env.token)
        with pytest.raises(wa.CredentialsError, match="cannot be renewed"):
            await env.session.create_record("customers", {"name": "x"})
        assert env.sim.calls_by_route["POST /tables/{table}/records"] == 1


async def test_token_without_can_run_on_a_definition_gets_403_naming_it() -> None:
    async with today(scopes=["can_run:kyc-basic", "can_view_workspace"]) as env:
        outcome = await env.session.run_and_wait(workflow_definition_id="kyc-basic", timeout=30)
        assert outcome.workflow.status == "COMPLETED"
        with pytest.raises(wa.PermissionDeniedError) as caught:
            await env.session.run_workflow(workflow_definition_id="kyc-instant")
        assert caught.value.permission == "can_run"
        message = str(caught.value)
        assert message.startswith("POST /workflows/run answered 403 forbidden (request id ")
        assert message.endswith("): missing permission can_run")
        with pytest.raises(wa.PermissionDeniedError) as caught:
            await env.session.start_execution("kyc-instant", locale="en", parameters={})
        assert caught.value.permission == "can_run"
        assert env.sim.workflows.keys() == {outcome.workflow.id}


async def test_token_without_can_view_workspace_cannot_read_a_workflow() -> None:
    async with today(scopes=["can_run"]) as env:
        workflow = await env.session.run_workflow(workflow_definition_id="kyc-basic")
        with pytest.raises(wa.PermissionDeniedError) as caught:
            await env.session.get_workflow(workflow.id)
        assert caught.value.permission == "can_view_workspace"


# -- versions and records -------------------------------------------------------------------


async def test_v2_run_for_a_record_answers_record_id_and_webhooks_carry_it() -> None:
    async with today() as env:
        env.sim.define_table("people", fields=["email", "personalNumber"])
        record = await env.session.create_record(
            "people", {"email": "ada@example.test", "personalNumber": "18151210-0000"}
        )
        assert record.version == 1 and record["email"] == "ada@example.test"
        assert await env.session.get_record("people", record.id) == record
        outcome = await env.session.run_and_wait(
            workflow_definition_id="kyc-basic", record_id=record.id, timeout=30
        )
        assert outcome.workflow.record_id == record.id and outcome.workflow.case_id is None
        assert outcome.channel is wa.Channel.WEBHOOK
        assert outcome.result is not None and outcome.result["recordId"] == record.id
        assert "partyDetails" not in outcome.result and "partyId" not in outcome.result


async def test_records_refuse_unknown_tables_fields_and_records() -> None:
    async with today() as env:
        env.sim.define_table("people", fields=["email"])
        with pytest.raises(wa.BadRequestError):
            await env.session.create_record("people", {"phone": "1"})
        with pytest.raises(wa.NotFoundError):
            await env.session.create_record("nope", {"email": "x"})
        with pytest.raises(wa.NotFoundError):
            await env.session.run_workflow(
                workflow_definition_id="kyc-basic", record_id="0c5e2a9b-7d41-4f0e-b2a3-5c6d7e8f9a0b"
            )


async def test_v1_still_runs_cases_on_the_same_simulator() -> None:
    async with today(api_version=None) as env:
        case = await env.session.create_case(company_name="Acme")
        outcome = await env.session.run_and_wait(case.id, "kyc-basic", timeout=30)
        assert outcome.workflow.case_id == case.id and outcome.workflow.record_id is None


async def test_unsupported_version_is_406_with_a_reason() -> None:
    async with today(api_version=3) as env:
        with pytest.raises(wa.APIError) as caught:
            await env.session.run_workflow(workflow_definition_id="kyc-basic")
        assert caught.value.status == 406
        assert "not supported" in caught.value.body_excerpt


# -- executions -----------------------------------------------------------------------------


async def test_execution_start_then_finished_by_webhook() -> None:
    async with today() as env:
        execution = await env.session.start_execution(
            "kyc-basic",
            locale="en",
            parameters={"level": 2},
            expires_at=datetime.now(UTC) + timedelta(hours=2),
        )
        assert execution.status == "RUNNING" and execution.execution_type == "BACKGROUND"
        assert execution.locale == "en" and execution.workspace_id
        assert execution.expires is not None
        outcome = await env.session.wait(execution.id, timeout=30)
        assert outcome.workflow.status == "COMPLETED"
        assert outcome.result is not None and outcome.result["parameters"] == {"level": 2}
        again = await env.session.get_execution(execution.id)
        assert again.status == "COMPLETED" and again.parameters == {"level": 2}


async def test_execute_and_wait_by_webhook() -> None:
    async with today() as env:
        outcome = await env.session.execute_and_wait(
            "kyc-basic", locale="en", parameters={}, timeout=30
        )
        assert outcome.channel is wa.Channel.WEBHOOK and env.polls() == 0
        assert outcome.execution.status == "RUNNING"
        assert outcome.workflow.status == "COMPLETED" and outcome.succeeded


async def test_execute_and_wait_by_poll_when_webhooks_are_lost() -> None:
    async with today(faults=Faults(drop_webhooks=1.0)) as env:
        outcome = await env.session.execute_and_wait(
            "kyc-basic", locale="en", parameters={}, timeout=30
        )
        assert outcome.channel is wa.Channel.POLL and outcome.succeeded


async def test_execute_and_wait_failure_status() -> None:
    async with today() as env:
        with pytest.raises(wa.WorkflowFailed) as caught:
            await env.session.execute_and_wait(
                "kyc-failing", locale="en", parameters={}, timeout=30
            )
        assert caught.value.workflow_id


async def test_execute_and_wait_timeout_then_wait_by_id() -> None:
    async with today() as env:
        with pytest.raises(wa.WorkflowTimeout) as caught:
            await env.session.execute_and_wait("slow", locale="en", parameters={}, timeout=0.5)
        execution_id = caught.value.workflow_id
        assert execution_id is not None and execution_id in env.sim.workflows
        assert isinstance(caught.value, TimeoutError)
        assert not env.session.pending()
        waiter = asyncio.create_task(env.session.wait(execution_id, timeout=30))
        await env.sim.complete(execution_id)
        outcome = await waiter
        assert outcome.workflow.id == execution_id and outcome.succeeded
        assert env.sim.calls_by_route["POST /workflows"] == 1  # never started twice


async def test_ui_execution_has_link_and_token_masked() -> None:
    async with today() as env:
        execution = await env.session.start_execution("kyc-ui", locale="sv", parameters={})
        assert execution.execution_type == "UI" and execution.link and execution.token
        assert execution.token not in repr(execution) and execution.link not in repr(execution)


async def test_simulator_refuses_expiry_out_of_bounds() -> None:
    async with today() as env:
        env.session.wall_clock = lambda: datetime.now(UTC) - timedelta(hours=1)
        with pytest.raises(wa.BadRequestError) as caught:  # 20 minutes ahead by the server
            await env.session.start_execution(
                "kyc-basic",
                locale="en",
                parameters={},
                expires_at=datetime.now(UTC) + timedelta(minutes=20),
            )
        assert "30 minutes" in json.loads(caught.value.body_excerpt)["message"]


async def test_accept_header_chooses_the_answer_shape_of_a_workflow() -> None:
    async with today() as env:
        record = await env.session.create_record("customers", {"name": "x"})
        workflow = await env.session.run_workflow(
            workflow_definition_id="slow", record_id=record.id
        )
        headers = {"Authorization": env.token}
        path = f"/workflows/{workflow.id}"
        _, v2 = await raw(
            env.sim, "GET", path, headers={**headers, "Accept": "application/json;version=2"}
        )
        _, v1 = await raw(env.sim, "GET", path, headers={**headers, "Accept": "application/json"})
        assert v2 == {"id": workflow.id, "recordId": record.id, "status": "IN_PROGRESS"}
        assert v1 == {"id": workflow.id, "caseId": None, "status": "IN_PROGRESS"}
        status, body = await raw(
            env.sim, "GET", path, headers={**headers, "Accept": "application/json;version=9"}
        )
        assert status == 406 and body["error"] == "not_acceptable"


async def test_webhooks_of_a_record_run_and_of_an_execution_carry_the_record_id() -> None:
    async with today() as env:
        seen: list[dict[str, Any]] = []
        env.session.on_event(lambda event: seen.append(event.payload))
        record = await env.session.create_record("customers", {"name": "x"})
        run = await env.session.run_and_wait(
            workflow_definition_id="kyc-basic", record_id=record.id, timeout=30
        )
        execution = await env.session.execute_and_wait(
            "kyc-basic", locale="en", parameters={}, record_id=record.id, timeout=30
        )
        await eventually(lambda: len(seen) >= 2, "both webhook events")
        by_id = {payload["workflowId"]: payload for payload in seen}
        for workflow_id in (run.workflow.id, execution.workflow.id):
            assert by_id[workflow_id]["recordId"] == record.id
            assert "caseId" not in by_id[workflow_id]
        assert execution.workflow.record_id == record.id


async def test_execute_and_wait_shares_the_result_fetch_retries_of_run_and_wait() -> None:
    async with today(faults=Faults(result_delay=0.3)) as env:
        outcome = await env.session.execute_and_wait(
            "kyc-basic", locale="en", parameters={}, timeout=30
        )
        assert outcome.succeeded and outcome.result is not None
        assert env.sim.calls_by_route["GET /workflows/{id}/result"] > 1  # a 409 was retried


async def test_every_error_after_the_start_names_the_execution() -> None:
    async with today(scopes=["can_run"]) as env:  # may start, may not read the result
        with pytest.raises(wa.PermissionDeniedError) as caught:
            await env.session.execute_and_wait("kyc-basic", locale="en", parameters={}, timeout=30)
        assert caught.value.permission == "can_view_workspace"
        assert caught.value.workflow_id in env.sim.workflows
