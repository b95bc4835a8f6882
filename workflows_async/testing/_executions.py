"""Executions of the simulated API: ``POST /workflows`` (``GET /workflows/{id}`` finds them).

Invariants: an execution runs in the background on the Simulator's one scheduler, like a run,
and its status changes are announced by the same signed webhooks; it starts ``RUNNING`` and then
follows its definition's later statuses; ``expiresAt`` is refused unless 30 minutes to 30 days
ahead (with one minute of tolerance for clock skew and transit); a UI execution (a definition
whose ``execution_type`` is not ``BACKGROUND``) carries a ``link`` and a ``token``.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from collections.abc import Callable, Container, Coroutine
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._org_tokens import require
from ._state import SimState, Transition
from ._wire import (
    Reject,
    check_fields,
    encode,
    iso8601,
    optional_str,
    required_str,
    required_uuid,
)

if TYPE_CHECKING:
    from ._app import Backend

__all__ = ["WORKSPACE_ID", "add_routes", "start_execution"]

WORKSPACE_ID = "00000000-0000-4000-8000-00000000cafe"
_MIN, _MAX, _SLACK = timedelta(minutes=30), timedelta(days=30), timedelta(minutes=1)
_DEFAULT_EXPIRY = 24 * 3600.0
_FIELDS = ("workflowDefinitionId", "locale", "parameters", "expiresAt", "recordId")


def _expiry(body: dict[str, Any], wall: float) -> str:
    text = optional_str(body, "expiresAt")
    if text is None:
        return iso8601(wall + _DEFAULT_EXPIRY)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Reject(400, "expiresAt must be an ISO 8601 time", error="invalid_field") from None
    if when.tzinfo is None:
        raise Reject(400, "expiresAt must carry a time zone", error="invalid_field")
    ahead = timedelta(seconds=when.timestamp() - wall)
    if not _MIN - _SLACK <= ahead <= _MAX + _SLACK:
        message = "expiresAt must be between 30 minutes and 30 days ahead"
        raise Reject(400, message, error="invalid_field")
    return iso8601(when.timestamp())


def start_execution(
    state: SimState,
    body: dict[str, Any],
    *,
    base_url: str,
    records: Container[str],
    allowed: Callable[[str], None],
    wall_clock: Callable[[], float] = time.time,
) -> tuple[dict[str, Any], Transition, float | None]:
    """Check the body, start the execution; its JSON, first status and next due time.

    ``allowed(definition_id)`` raises the 403 when the caller may not run the definition."""
    check_fields(body, _FIELDS)
    definition_id = required_str(body, "workflowDefinitionId")
    locale = required_str(body, "locale")
    if "parameters" not in body:
        raise Reject(400, "missing required field: parameters", error="missing_field")
    parameters = body["parameters"]
    if not isinstance(parameters, dict):
        raise Reject(400, "parameters must be a JSON object", error="invalid_field")
    record_id = None
    if body.get("recordId") is not None:
        record_id = required_uuid(body, "recordId")
    allowed(definition_id)
    definition = state.definition(definition_id)
    if record_id is not None and record_id not in records:
        raise Reject(404, "unknown record", error="record_not_found")
    expires_at = _expiry(body, wall_clock())
    statuses = definition.statuses
    if len(statuses) > 1 and not definition.terminal_on_run:
        definition = dataclasses.replace(definition, statuses=("RUNNING", *statuses[1:]))
    execution: dict[str, Any] = {
        "workspaceId": WORKSPACE_ID,
        "workflowDefinitionId": definition_id,
        "parameters": parameters,
        "name": definition_id,
        "revision": 1,
        "locale": locale,
        "expiresAt": expires_at,
        "executionType": definition.execution_type,
        "executionVersion": 1,
    }
    if record_id is not None:
        execution["recordId"] = record_id
    if definition.execution_type != "BACKGROUND":
        token = secrets.token_urlsafe(24)
        execution["token"] = token
        execution["link"] = f"{base_url}/ui/{uuid.uuid4()}?token={token}"
    run, first, due = state.start(
        definition_id, definition, record_id=record_id, execution=execution
    )
    return state.public(run.id), first, due


def add_routes(
    app: web.Application,
    backend: Callable[[web.Request], Backend],
    read_json: Callable[[web.Request], Coroutine[Any, Any, dict[str, Any]]],
) -> None:
    """Register ``POST /workflows`` on the Simulator's app."""

    async def create(request: web.Request) -> web.StreamResponse:
        sim, body = backend(request), await read_json(request)
        execution, first, due = start_execution(
            sim.state,
            body,
            base_url=f"{request.scheme}://{request.host}",
            records=sim.tables,
            allowed=lambda definition_id: require(request, "can_run", definition_id),
        )
        if due is not None:
            sim.scheduled(due)
        if first.final:
            sim.dispatcher.submit(first)  # as for a run: announced right after the answer
        return web.Response(status=201, body=encode(execution), content_type="application/json")

    app.router.add_post("/workflows", create)
