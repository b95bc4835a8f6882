"""The calls of the API's newer generation: records (version 2) and executions, as a mixin of
:class:`~workflows_async.Session`, plus the version rule of ``POST /workflows/run``.

Invariants: every argument is checked before anything is sent (ids before they go into a path,
``case_id`` only with version 1, ``record_id`` only with version 2 or later, ``expires_at``
bounds); parameter values and record fields never appear in an error message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from ._ids import check_path_id
from .errors import ConfigurationError, OutcomeUnknownError
from .executions import Execution, ExecutionRequest, check_expires_at, wire_time
from .models import RunRequest
from .records import RECORD_META_FIELDS, Record

__all__ = ["V2Calls", "run_request"]

T = TypeVar("T")

_EXECUTION = msgspec.json.Decoder(Execution)
_ANY = msgspec.json.Decoder()
_OBJECT = msgspec.json.Decoder(dict[str, Any])
_ENCODE = msgspec.json.Encoder().encode


def _non_empty(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{what} must be a non-empty string")
    return value


def _json_object(value: object, what: str) -> bytes:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigurationError(f"{what} must be a mapping with string keys (a JSON object)")
    try:
        return _ENCODE(dict(value))
    except (TypeError, msgspec.EncodeError):
        raise ConfigurationError(f"{what} cannot be sent as JSON") from None


def run_request(
    api_version: int | None,
    case_id: str | None,
    workflow_definition_id: str | None,
    *,
    record_id: str | None,
    parameters_id: str | None,
) -> RunRequest:
    """The body of ``POST /workflows/run`` for ``api_version`` (None: the default, 1).

    Version 1 runs a workflow for a case (``case_id`` required); version 2 and later for an
    optional record (``record_id``). The other id is a :class:`ConfigurationError`."""
    version = api_version or 1
    definition = _non_empty(workflow_definition_id, "workflow_definition_id")
    if version >= 2:
        if case_id is not None:
            raise ConfigurationError(
                f"case_id is an API version 1 argument; with api_version={version} pass "
                "record_id (optional) instead: records replace cases"
            )
        if record_id is not None:
            check_path_id(record_id, "record_id")
    else:
        if record_id is not None:
            raise ConfigurationError(
                "record_id needs API version 2: create the Session with api_version=2 "
                "(version 1 runs a workflow for a case_id)"
            )
        if case_id is None:
            raise ConfigurationError("case_id is required with API version 1")
        check_path_id(case_id, "case_id")
    if parameters_id is not None:
        check_path_id(parameters_id, "parameters_id")
    return RunRequest(
        workflow_definition_id=definition,
        case_id=case_id,
        record_id=record_id,
        parameters_id=parameters_id,
    )


class V2Calls:
    """Records and executions; mixed into ``Session``, which supplies ``_call_json``."""

    wall_clock: Callable[[], datetime] = staticmethod(lambda: datetime.now(UTC))
    """The clock ``expires_at`` is checked against (replace it in tests)."""

    async def _call_json(
        self,
        method: str,
        path: str,
        decoder: msgspec.json.Decoder[T],
        *,
        body: bytes | None = None,
        retry: bool = True,
        known: Mapping[str, str] | None = None,
    ) -> T:  # pragma: no cover - Session's implementation is used
        raise NotImplementedError

    # -- records ------------------------------------------------------------------------------

    async def create_record(self, table_id: str, fields: Mapping[str, Any]) -> Record:
        """``POST /tables/{tableId}/records``: a record with the table's ``fields`` (as
        configured in the dashboard); the answer keeps every field the server sent."""
        path = f"/tables/{check_path_id(table_id, 'table_id')}/records"
        reserved = (
            sorted(set(fields) & set(RECORD_META_FIELDS)) if isinstance(fields, Mapping) else []
        )
        if reserved:
            raise ConfigurationError(f"fields {reserved} are set by the server, not by the caller")
        body = _json_object(fields, "fields")
        data: dict[str, Any] = await self._call_json("POST", path, _OBJECT, body=body)
        return Record(data)

    async def get_record(self, table_id: str, record_id: str) -> Record:
        """``GET /tables/{tableId}/records/{id}``."""
        table = check_path_id(table_id, "table_id")
        path = f"/tables/{table}/records/{check_path_id(record_id, 'record_id')}"
        data: dict[str, Any] = await self._call_json("GET", path, _OBJECT)
        return Record(data)

    # -- executions ---------------------------------------------------------------------------

    def _execution_body(
        self,
        workflow_definition_id: str,
        locale: str,
        parameters: Mapping[str, Any],
        expires_at: datetime | None,
        record_id: str | None,
    ) -> bytes:
        expiry = None
        if expires_at is not None:
            expiry = wire_time(check_expires_at(expires_at, self.wall_clock()))
        if record_id is not None:
            check_path_id(record_id, "record_id")
        _json_object(parameters, "parameters")
        request = ExecutionRequest(
            workflow_definition_id=_non_empty(workflow_definition_id, "workflow_definition_id"),
            locale=_non_empty(locale, "locale"),
            parameters=dict(parameters),
            expires_at=expiry,
            record_id=record_id,
        )
        return _ENCODE(request)

    async def start_execution(
        self,
        workflow_definition_id: str,
        *,
        locale: str,
        parameters: Mapping[str, Any],
        expires_at: datetime | None = None,
        record_id: str | None = None,
    ) -> Execution:
        """``POST /workflows``: start an execution of a workflow definition.

        ``locale`` (e.g. ``"en"``) and ``parameters`` (a JSON object; may be empty) are
        required. ``expires_at``, a timezone-aware datetime 30 minutes to 30 days ahead, and
        ``record_id`` are optional. Its status may be ``RUNNING``; follow it with
        ``wait(execution.id)``, or use ``execute_and_wait``. Like every POST that starts a
        check, it is never resent unless it surely did not reach the server.
        """
        body = self._execution_body(
            workflow_definition_id, locale, parameters, expires_at, record_id
        )
        return await self._post_execution(body, workflow_definition_id, record_id)

    async def _post_execution(
        self, body: bytes, workflow_definition_id: str, record_id: str | None
    ) -> Execution:
        """Send ``POST /workflows`` once. The answer is read leniently: an id the server sent
        is never thrown away; without one the execution may have started all the same, so
        :class:`OutcomeUnknownError` (never a resend)."""
        known = {"workflow_definition_id": workflow_definition_id}
        if record_id is not None:
            known["record_id"] = record_id
        data: Any = await self._call_json("POST", "/workflows", _ANY, body=body, known=known)
        try:
            return msgspec.convert(data, Execution)
        except msgspec.ValidationError:
            pass
        fields: dict[str, Any] = data if isinstance(data, dict) else {}
        found, status = fields.get("id"), fields.get("status")
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found)
        try:
            execution_id = check_path_id(found, "execution id")
        except ConfigurationError:
            raise OutcomeUnknownError(
                "POST /workflows was answered 2xx but it holds no usable execution id; it was "
                "not resent: check before sending it again",
                method="POST",
                path="/workflows",
                record_id=record_id,
                workflow_definition_id=workflow_definition_id,
            ) from None
        return Execution(id=execution_id, status=status if isinstance(status, str) else "")

    async def get_execution(self, execution_id: str) -> Execution:
        """``GET /workflows/{id}`` read as an :class:`Execution`."""
        path = f"/workflows/{check_path_id(execution_id, 'execution_id')}"
        return await self._call_json("GET", path, _EXECUTION)
