"""Records (API version 2): the rows of a table configured in the dashboard; they replace cases.

Invariants: every field the server sends is kept (a table's fields are configured per table);
``repr()`` shows the record's id, version and field names, never a field's value (personal data).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["RECORD_META_FIELDS", "Record"]

RECORD_META_FIELDS = ("id", "version", "createdAt", "updatedAt")
"""The fields the server manages on every record; the rest are the table's own."""


class Record(Mapping[str, Any]):
    """A record of a table: ``record.id``, ``version``, ``created_at``, ``updated_at`` and the
    table's own fields, read as ``record["email"]`` or through ``record.fields``. ``record.data``
    holds the whole object as the server sent it."""

    __slots__ = ("data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data: dict[str, Any] = dict(data)

    @property
    def id(self) -> str:
        value = self.data.get("id")
        return value if isinstance(value, str) else ""

    @property
    def version(self) -> int | None:
        value = self.data.get("version")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def created_at(self) -> str | None:
        value = self.data.get("createdAt")
        return value if isinstance(value, str) else None

    @property
    def updated_at(self) -> str | None:
        value = self.data.get("updatedAt")
        return value if isinstance(value, str) else None

    @property
    def fields(self) -> dict[str, Any]:
        """The table's own fields (everything but id, version, createdAt, updatedAt)."""
        return {k: v for k, v in self.data.items() if k not in RECORD_META_FIELDS}

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Record(id={self.id!r}, version={self.version!r}, fields={sorted(self.fields)})"

    __str__ = __repr__
