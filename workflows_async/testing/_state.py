"""Pure state of the simulated API: cases, parameter sets, workflows, and ONE heap of pending
status transitions (at most one live entry per unfinished workflow).

Rule 1: a workflow only moves forward along the status sequence it was started with, or jumps
to a final status through `force`; once final it never changes again except by `force`.
Rule 2: nothing here sleeps, spawns tasks or touches sockets; time comes from injected clocks,
and `advance` applies every transition due by now, in due order, returning each exactly once.
"""

from __future__ import annotations

import heapq
import math
import time
import uuid
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._wire import (
    CASE_FIELDS,
    Reject,
    check_fields,
    iso8601,
    optional_str,
    required_str,
    required_uuid,
)

__all__ = [
    "BUILTIN_DEFINITIONS",
    "SimState",
    "Transition",
    "WorkflowDefinition",
    "WorkflowInfo",
    "WorkflowsView",
]


@dataclass(frozen=True)
class WorkflowDefinition:
    """How a simulated workflow behaves once run.

    ``statuses`` is the sequence after the run starts (the first is what the run answers, the
    last is final); ``duration`` is the simulated seconds from run to final status, intermediate
    statuses evenly spaced (multiplied by the Simulator's ``time_scale``); with
    ``terminal_on_run`` the run answers the final status at once; ``result`` holds extra fields
    merged last into ``GET /workflows/{id}/result`` (so they may override the defaults).
    """

    statuses: tuple[str, ...] = ("IN_PROGRESS", "COMPLETED")
    duration: float = 1.0
    terminal_on_run: bool = False
    result: Mapping[str, Any] = field(default_factory=dict)
    execution_type: str = "BACKGROUND"
    """What an execution of it (``POST /workflows``) reports; anything else is a UI variant,
    answered with a ``link`` and a ``token``."""

    def __post_init__(self) -> None:
        statuses = tuple(self.statuses)
        if not statuses or not all(isinstance(s, str) and s for s in statuses):
            raise ValueError("WorkflowDefinition.statuses must be non-empty strings, at least one")
        if not math.isfinite(self.duration) or self.duration < 0:
            raise ValueError("WorkflowDefinition.duration must be finite and >= 0")
        object.__setattr__(self, "statuses", statuses)
        object.__setattr__(self, "result", MappingProxyType(dict(self.result)))


BUILTIN_DEFINITIONS: Mapping[str, WorkflowDefinition] = MappingProxyType(
    {
        "kyc-basic": WorkflowDefinition(("IN_PROGRESS", "COMPLETED"), 0.5),
        "kyc-instant": WorkflowDefinition(("COMPLETED",), 0.0, terminal_on_run=True),
        "kyc-awaiting": WorkflowDefinition(("IN_PROGRESS", "AWAITING", "COMPLETED"), 1.0),
        "kyc-failing": WorkflowDefinition(("IN_PROGRESS", "FAILED"), 0.5),
    }
)


@dataclass(frozen=True, slots=True)
class Transition:
    """A workflow reached ``status`` at wall-clock time ``at``."""

    workflow_id: str
    case_id: str | None
    status: str
    final: bool
    at: float
    record_id: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A read-only snapshot of one simulated workflow."""

    id: str
    case_id: str
    """The case of a version 1 run; empty for a record's run and for an execution."""
    definition_id: str
    parameters_id: str | None
    status: str
    final: bool
    history: tuple[tuple[str, float], ...]
    """Every status it has had, with the wall-clock time it got it."""
    record_id: str | None = None
    execution: Mapping[str, Any] | None = None
    """For an execution (``POST /workflows``): its fields as answered, status aside."""


@dataclass(slots=True)
class _Run:
    id: str
    case_id: str | None
    definition_id: str
    parameters_id: str | None
    definition: WorkflowDefinition
    started: float
    step: float
    index: int
    status: str
    final: bool
    history: list[tuple[str, float]]
    completed_at: float = 0.0
    """Wall-clock time of the final status."""
    final_at: float = 0.0
    """``clock`` time of the final status."""
    record_id: str | None = None
    execution: dict[str, Any] | None = None


class SimState:
    """The whole mutable state of one Simulator, with the rules of the API."""

    def __init__(
        self,
        *,
        definitions: Mapping[str, WorkflowDefinition],
        time_scale: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.definitions: dict[str, WorkflowDefinition] = dict(definitions)
        self._scale, self._clock, self._wall = time_scale, clock, wall_clock
        self._cases: dict[str, dict[str, Any]] = {}
        self._parties: dict[str, str] = {}
        self._parameters: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, _Run] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self.active = 0
        """Unfinished workflows that still have a transition scheduled."""

    # -- cases and parameter sets ------------------------------------------------------------
    def create_case(self, body: Mapping[str, Any]) -> dict[str, Any]:
        check_fields(body, CASE_FIELDS)
        case: dict[str, Any] = {"id": str(uuid.uuid4())}
        case.update((name, optional_str(body, name)) for name in CASE_FIELDS)
        self._cases[case["id"]] = case
        self._parties[case["id"]] = str(uuid.uuid4())
        return case

    def create_parameters(self, body: Mapping[str, Any]) -> dict[str, Any]:
        check_fields(body, ("workflowDefinitionId", "parameters"))
        definition_id = required_str(body, "workflowDefinitionId")
        parameters = body.get("parameters")
        if parameters is None:
            raise Reject(400, "missing required field: parameters", error="missing_field")
        if not isinstance(parameters, dict):
            raise Reject(400, "parameters must be a JSON object", error="invalid_field")
        if definition_id not in self.definitions:
            raise Reject(404, "unknown workflow definition", error="definition_not_found")
        record: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "workflowDefinitionId": definition_id,
            "parameters": parameters,
        }
        self._parameters[record["id"]] = record
        return record

    # -- workflows ---------------------------------------------------------------------------
    def run(
        self, body: Mapping[str, Any], *, version: int = 1, records: Container[str] = ()
    ) -> tuple[dict[str, Any], Transition, float | None]:
        """Start a workflow: its JSON, its first status, and when its next transition is due.

        Version 1 runs it for a case (``caseId``), version 2 for an optional record
        (``recordId``, looked up in ``records``)."""
        case_id: str | None = None
        record_id: str | None = None
        if version >= 2:
            check_fields(body, ("recordId", "workflowDefinitionId", "parametersId"))
            if body.get("recordId") is not None:
                record_id = required_uuid(body, "recordId")
                if record_id not in records:
                    raise Reject(404, "unknown record", error="record_not_found")
        else:
            check_fields(body, ("caseId", "workflowDefinitionId", "parametersId"))
            case_id = required_uuid(body, "caseId")
        definition_id = required_str(body, "workflowDefinitionId")
        parameters_id = optional_str(body, "parametersId")
        if case_id is not None and case_id not in self._cases:
            raise Reject(404, "unknown case", error="case_not_found")
        definition = self.definition(definition_id)
        if parameters_id is not None:
            parameters = self._parameters.get(parameters_id)
            if parameters is None:
                raise Reject(404, "unknown parameter set", error="parameters_not_found")
            if parameters["workflowDefinitionId"] != definition_id:
                message = "the parameter set belongs to another workflow definition"
                raise Reject(400, message, error="parameters_mismatch")
        run, first, due = self.start(
            definition_id, definition, case_id=case_id, record_id=record_id
        )
        run.parameters_id = parameters_id
        return self._public(run, version), first, due

    def definition(self, definition_id: str) -> WorkflowDefinition:
        definition = self.definitions.get(definition_id)
        if definition is None:
            raise Reject(404, "unknown workflow definition", error="definition_not_found")
        return definition

    def start(
        self,
        definition_id: str,
        definition: WorkflowDefinition,
        *,
        case_id: str | None = None,
        record_id: str | None = None,
        execution: dict[str, Any] | None = None,
    ) -> tuple[_Run, Transition, float | None]:
        """The one way a workflow starts (a run or an execution): schedule its statuses."""
        now, wall, statuses = self._clock(), self._wall(), definition.statuses
        last = len(statuses) - 1
        instant = definition.terminal_on_run or last == 0
        index = last if instant else 0
        step = 0.0 if instant else definition.duration * self._scale / last
        run = _Run(
            id=str(uuid.uuid4()),
            case_id=case_id,
            definition_id=definition_id,
            parameters_id=None,
            definition=definition,
            started=now,
            step=step,
            index=index,
            status=statuses[index],
            final=instant,
            history=[(statuses[index], wall)],
            record_id=record_id,
        )
        if execution is not None:
            run.execution = {**execution, "id": run.id}
        self._runs[run.id] = run
        due = None
        if instant:
            run.completed_at, run.final_at = wall, now
        else:
            due = self._schedule(run, 1)
        first = Transition(run.id, case_id, run.status, run.final, wall, record_id)
        return run, first, due

    def public(self, workflow_id: str, version: int = 1) -> dict[str, Any]:
        return self._public(self._find(workflow_id), version)

    def get(self, workflow_id: str, version: int = 1) -> dict[str, Any]:
        return self._public(self._find(workflow_id), version)

    def result(self, workflow_id: str, *, delay: float = 0.0) -> dict[str, Any]:
        """The result; 409 ``result_not_ready`` before the final status and ``delay`` seconds on."""
        run = self._find(workflow_id)
        if not run.final:
            message = f"the workflow has no result yet (status {run.status})"
            raise Reject(409, message, error="result_not_ready")
        if delay > 0 and self._clock() < run.final_at + delay:
            raise Reject(409, "the workflow's result is not ready yet", error="result_not_ready")
        parameters = self._parameters.get(run.parameters_id or "")
        if run.case_id is None:  # a record's workflow or an execution: no case, no party
            own = run.execution["parameters"] if run.execution else None
            return {
                "createdDate": iso8601(run.completed_at),
                "workflowId": run.id,
                "workflowDefinitionId": run.definition_id,
                "recordId": run.record_id,
                "status": run.status,
                "parameters": dict(own or (parameters["parameters"] if parameters else {})),
                **run.definition.result,
            }
        result: dict[str, Any] = {
            "createdDate": iso8601(run.completed_at),
            "workflowId": run.id,
            "workflowDefinitionId": run.definition_id,
            "caseId": run.case_id,
            "partyId": self._parties[run.case_id],
            "status": run.status,
            "case": dict(self._cases[run.case_id]),
            "parameters": dict(parameters["parameters"]) if parameters else {},
        }
        result.update(run.definition.result)
        return result

    def advance(self) -> list[Transition]:
        """Apply every transition due by now; the caller announces each one."""
        now, moved = self._clock(), []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, workflow_id, index = heapq.heappop(heap)
            run = self._runs[workflow_id]
            if run.final or run.index != index - 1:
                continue  # stale: overtaken by `force`
            run.index, run.status = index, run.definition.statuses[index]
            wall = self._wall()
            run.history.append((run.status, wall))
            if index == len(run.definition.statuses) - 1:
                run.final, run.completed_at, run.final_at = True, wall, now
                self.active -= 1
            else:
                self._schedule(run, index + 1, counted=True)
            moved.append(
                Transition(run.id, run.case_id, run.status, run.final, wall, run.record_id)
            )
        return moved

    def force(self, workflow_id: str, status: str) -> Transition | None:
        """Make ``status`` final now; None when the workflow already ended with it."""
        run = self._runs[workflow_id]
        if run.final and run.status == status:
            return None
        if not run.final:
            self.active -= 1
        wall = self._wall()
        run.status, run.final, run.completed_at = status, True, wall
        run.final_at = self._clock()
        run.history.append((status, wall))
        return Transition(run.id, run.case_id, status, True, wall, run.record_id)

    def next_due(self) -> float | None:
        """When the earliest live transition is due (``clock`` time), or None."""
        heap = self._heap
        while heap:
            _, _, workflow_id, index = heap[0]
            run = self._runs[workflow_id]
            if not run.final and run.index == index - 1:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def info(self, workflow_id: str) -> WorkflowInfo:
        run = self._runs[workflow_id]
        return WorkflowInfo(
            id=run.id,
            case_id=run.case_id or "",
            definition_id=run.definition_id,
            parameters_id=run.parameters_id,
            status=run.status,
            final=run.final,
            history=tuple(run.history),
            record_id=run.record_id,
            execution=MappingProxyType(dict(run.execution)) if run.execution else None,
        )

    def workflow_ids(self) -> Iterator[str]:
        return iter(self._runs)

    def workflow_count(self) -> int:
        return len(self._runs)

    def _schedule(self, run: _Run, index: int, *, counted: bool = False) -> float:
        due = run.started + run.step * index
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, run.id, index))
        if not counted:
            self.active += 1
        return due

    def _find(self, workflow_id: str) -> _Run:
        run = self._runs.get(workflow_id)
        if run is None:
            raise Reject(404, "unknown workflow", error="workflow_not_found")
        return run

    @staticmethod
    def _public(run: _Run, version: int = 1) -> dict[str, Any]:
        if run.execution is not None:
            return {**run.execution, "status": run.status}
        if version >= 2:
            return {"id": run.id, "recordId": run.record_id, "status": run.status}
        return {"id": run.id, "caseId": run.case_id, "status": run.status}


class WorkflowsView(Mapping[str, WorkflowInfo]):
    """A live, read-only mapping of workflow id -> `WorkflowInfo` snapshot."""

    def __init__(self, state: SimState) -> None:
        self._state = state

    def __getitem__(self, workflow_id: str) -> WorkflowInfo:
        return self._state.info(workflow_id)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._state.workflow_ids()))

    def __len__(self) -> int:
        return self._state.workflow_count()
