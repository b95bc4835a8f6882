"""Records tables of the simulated API (version 2): ``POST /tables/{tableId}/records`` and
``GET /tables/{tableId}/records/{id}``.

Invariants: a table exists only once defined (``Simulator.define_table``; ``customers`` is
built in) and a record only in the table it was created in; a table defined with ``fields``
refuses any other field (400), one defined without takes any; the server-managed fields
(``id``, ``version``, ``createdAt``, ``updatedAt``) are never taken from the request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from ._org_tokens import require
from ._wire import Reject, encode, iso8601

__all__ = ["BUILTIN_TABLES", "RecordTables", "add_routes"]

BUILTIN_TABLES = ("customers",)
_META = ("id", "version", "createdAt", "updatedAt")


class RecordTables:
    """Tables by id, each with its allowed fields (None: any) and its records."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall = wall_clock
        self._fields: dict[str, frozenset[str] | None] = dict.fromkeys(BUILTIN_TABLES)
        self._records: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in BUILTIN_TABLES}
        self._table_of: dict[str, str] = {}

    def define(self, table_id: str, fields: Iterable[str] | None = None) -> None:
        allowed = None if fields is None else frozenset(fields)
        if allowed is not None and allowed & set(_META):
            raise ValueError(f"{sorted(allowed & set(_META))} are managed by the server")
        self._fields[table_id] = allowed
        self._records.setdefault(table_id, {})

    def __contains__(self, record_id: object) -> bool:
        """A record of any table (what ``recordId`` of a run or an execution may name)."""
        return record_id in self._table_of

    def create(self, table_id: str, body: dict[str, Any]) -> dict[str, Any]:
        records = self._table(table_id)
        allowed = self._fields[table_id]
        meta = sorted(set(body) & set(_META))
        if meta:
            raise Reject(400, f"read-only field(s): {', '.join(meta)}", error="read_only_field")
        if allowed is not None and (unknown := sorted(set(body) - allowed)):
            raise Reject(400, f"unknown field(s): {', '.join(unknown)}", error="unknown_field")
        now = iso8601(self._wall())
        record_id = str(uuid.uuid4())
        record = {"id": record_id, "version": 1, "createdAt": now, "updatedAt": now}
        record.update(body)
        records[record_id] = record
        self._table_of[record_id] = table_id
        return dict(record)

    def get(self, table_id: str, record_id: str) -> dict[str, Any]:
        record = self._table(table_id).get(record_id)
        if record is None:
            raise Reject(404, "unknown record", error="record_not_found")
        return dict(record)

    def _table(self, table_id: str) -> dict[str, dict[str, Any]]:
        records = self._records.get(table_id)
        if records is None:
            raise Reject(404, "unknown table", error="table_not_found")
        return records


def add_routes(
    app: web.Application,
    tables: Callable[[web.Request], RecordTables],
    read_json: Callable[[web.Request], Any],
) -> None:
    """Register the records routes on the Simulator's app."""

    async def create(request: web.Request) -> web.StreamResponse:
        table_id = request.match_info["table"]
        require(request, "can_create_records", table_id)
        body = await read_json(request)
        record = tables(request).create(table_id, body)
        return web.Response(status=201, body=encode(record), content_type="application/json")

    async def get(request: web.Request) -> web.StreamResponse:
        table_id = request.match_info["table"]
        require(request, "can_view_records", table_id)
        record = tables(request).get(table_id, request.match_info["id"])
        return web.Response(body=encode(record), content_type="application/json")

    app.router.add_post("/tables/{table}/records", create)
    app.router.add_get("/tables/{table}/records/{id}", get, allow_head=False)
