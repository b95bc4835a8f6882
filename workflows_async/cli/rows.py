"""Reading cases for ``batch`` (CSV with a header row, or JSON Lines) and for ``run --case-file``.

Invariants: a malformed row becomes a :class:`BadRow` with its line number and a reason that
never quotes the row's values; a row's key is its ``externalId``/``id`` column when present,
else a short hash of its content, so keys are stable across runs of the same file; two rows
with one key are found by `duplicate_keys` (``batch`` refuses them: each row is a paid check).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .common import UsageError

CASE_FIELDS = (
    "first_name",
    "last_name",
    "personal_number",
    "email",
    "company_name",
    "company_number",
    "company_address",
)
KEY_COLUMNS = ("externalId", "external_id", "id")
PARAMETERS_COLUMN = "parameters"
DEFINITION_COLUMNS = ("definition", "workflowDefinitionId", "workflow_definition_id")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_ALIASES: dict[str, str] = {name: name for name in CASE_FIELDS} | {
    _camel(name): name for name in CASE_FIELDS
}
_KNOWN = (
    frozenset(_ALIASES) | frozenset(KEY_COLUMNS) | {PARAMETERS_COLUMN} | set(DEFINITION_COLUMNS)
)


class RowError(ValueError):
    """A row (or a case file) that cannot be used; the message names fields, never values."""


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    line: int
    key: str
    case: dict[str, str]
    parameters: dict[str, Any] | None
    definition: str | None = None
    """The row's own workflow definition (a ``definition`` column), overriding ``--definition``."""


@dataclasses.dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str


def case_fields(data: Mapping[str, Any], *, allow_extra: bool = False) -> dict[str, str]:
    """``create_case`` keyword arguments from camelCase or snake_case keys."""
    case: dict[str, str] = {}
    for name, value in data.items():
        field = _ALIASES.get(name)
        if field is None:
            if allow_extra and name in _KNOWN:
                continue
            raise RowError(f"unknown case field {name!r}")
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise RowError(f"field {name!r} must be a string")
        if field in case:
            raise RowError(f"field {field!r} given twice")
        case[field] = value
    return case


def _key_value(data: Mapping[str, Any]) -> str | None:
    for column in KEY_COLUMNS:
        value = data.get(column)
        if isinstance(value, bool):
            raise RowError(f"column {column!r} must be a string or a number")
        if isinstance(value, int | str) and str(value).strip():
            return str(value).strip()
        if value not in (None, ""):
            raise RowError(f"column {column!r} must be a string or a number")
    return None


def _parameters(data: Mapping[str, Any], *, from_text: bool) -> dict[str, Any] | None:
    value = data.get(PARAMETERS_COLUMN)
    if value is None or value == "":
        return None
    if from_text and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError("column 'parameters' is not valid JSON") from None
    if not isinstance(value, dict):
        raise RowError("column 'parameters' must be a JSON object")
    return value


def _definition(data: Mapping[str, Any]) -> str | None:
    for column in DEFINITION_COLUMNS:
        value = data.get(column)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or not value.strip():
            raise RowError(f"column {column!r} must be a workflow definition id")
        return value.strip()
    return None


def content_hash(
    case: Mapping[str, str], parameters: Mapping[str, Any] | None, definition: str | None = None
) -> str:
    content: list[Any] = [case, parameters]
    if definition is not None:  # files without the column keep the keys they always had
        content.append(definition)
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def duplicate_keys(rows: Iterable[Row | BadRow]) -> dict[str, list[int]]:
    """Each key that two or more rows share, with the lines of those rows, in file order."""
    lines: dict[str, list[int]] = {}
    for row in rows:
        if isinstance(row, Row):
            lines.setdefault(row.key, []).append(row.line)
    return {key: found for key, found in lines.items() if len(found) > 1}


def _row(line: int, data: Mapping[str, Any], *, from_text: bool) -> Row | BadRow:
    try:
        case = case_fields(data, allow_extra=True)
        parameters = _parameters(data, from_text=from_text)
        explicit = _key_value(data)
        definition = _definition(data)
    except RowError as exc:
        return BadRow(line, str(exc))
    if not case:
        return BadRow(line, "no case fields (firstName, lastName, companyName, ...)")
    key = explicit or content_hash(case, parameters, definition)
    return Row(line, key, case, parameters, definition)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    with path.open("rb") as file:
        start = file.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "jsonl" if start.startswith(b"{") else "csv"


def read_rows(path: Path, fmt: str = "auto") -> list[Row | BadRow]:
    """Every row of ``path``; a file-level problem (no header, unknown column) is a UsageError."""
    if fmt == "auto":
        fmt = detect_format(path)
    with path.open("rb") as file:
        data = file.read()
    if fmt == "csv":
        return list(_csv_rows(path, data))
    return list(_jsonl_rows(data))


def _csv_rows(path: Path, data: bytes) -> Iterator[Row | BadRow]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    previous = 0
    try:
        for record in reader:
            line, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                unknown = [name for name in header if name not in _KNOWN]
                if unknown:
                    raise UsageError(
                        f"{path}: line {line}: unknown column {unknown[0]!r} (expected case "
                        f"fields such as firstName or first_name, and optionally externalId, "
                        f"id, parameters, definition)"
                    )
                if len(set(header)) != len(header):
                    raise UsageError(f"{path}: line {line}: a column name appears twice")
                continue
            if len(record) != len(header):
                yield BadRow(line, f"expected {len(header)} fields, found {len(record)}")
                continue
            yield _row(line, dict(zip(header, record, strict=True)), from_text=True)
    except csv.Error as exc:
        raise UsageError(f"{path}: line {reader.line_num}: {exc}") from None
    if header is None:
        raise UsageError(f"{path}: empty file (expected a header row)")


def _jsonl_rows(data: bytes) -> Iterator[Row | BadRow]:
    for line, raw in enumerate(data.splitlines(), start=1):
        if line == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield BadRow(line, "not UTF-8 text")
            continue
        except json.JSONDecodeError as exc:
            yield BadRow(line, f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(value, dict):
            yield BadRow(line, "expected a JSON object")
            continue
        unknown = [name for name in value if name not in _KNOWN]
        if unknown:
            yield BadRow(line, f"unknown field {unknown[0]!r}")
            continue
        yield _row(line, value, from_text=False)
