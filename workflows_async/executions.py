"""The execution API (``POST /workflows``): the request, its checks, and the answer.

Invariants: the request is checked before anything is sent (``expiresAt`` must be a tz-aware
datetime 30 minutes to 30 days ahead, told the time rather than reading a clock); an
:class:`Execution`'s ``repr()`` never shows its parameters, its link or its token.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Generic

import msgspec

from .errors import ConfigurationError
from .models import R, WorkflowOutcome

__all__ = [
    "MAX_EXPIRY",
    "MIN_EXPIRY",
    "Execution",
    "ExecutionOutcome",
    "ExecutionRequest",
    "check_expires_at",
    "wire_time",
]

MIN_EXPIRY = timedelta(minutes=30)
MAX_EXPIRY = timedelta(days=30)


def check_expires_at(value: object, now: datetime) -> datetime:
    """``value`` in UTC if it is a tz-aware datetime between 30 minutes and 30 days after
    ``now``; else :class:`ConfigurationError`. (The server checks again by its own clock: keep
    a margin of a minute or two from either end.)"""
    if not isinstance(value, datetime):
        raise ConfigurationError("expires_at must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(
            "expires_at must be timezone-aware (e.g. datetime.now(UTC) + timedelta(days=1))"
        )
    ahead = value - now
    if not MIN_EXPIRY <= ahead <= MAX_EXPIRY:
        raise ConfigurationError(
            "expires_at must be between 30 minutes and 30 days ahead "
            f"(it is {ahead.total_seconds() / 3600:.2f} hours ahead)"
        )
    return value.astimezone(UTC)


def wire_time(value: datetime) -> str:
    """A UTC datetime as the API writes times: ``2026-05-01T12:00:00.000Z``."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ExecutionRequest(
    msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """The body of ``POST /workflows``: strict, optional fields left at None not sent."""

    workflow_definition_id: str
    locale: str
    parameters: dict[str, Any]
    expires_at: str | None = None
    record_id: str | None = None


_HIDDEN = frozenset({"parameters", "link", "token"})


class Execution(msgspec.Struct, rename="camel", kw_only=True):
    """An execution started by ``POST /workflows`` (or read by ``GET /workflows/{id}``).

    ``status`` is an open string (e.g. ``RUNNING``); ``execution_type`` is ``BACKGROUND`` or a
    UI variant, which also carries the ``link`` to send the end user and its ``token``.
    ``repr()`` masks ``link`` and ``token`` and shows the parameter names only: the vendor
    warns parameters may be logged, and ours never are.
    """

    id: str
    workspace_id: str | None = None
    workflow_definition_id: str | None = None
    name: str | None = None
    revision: int | str | None = None
    status: str = ""
    locale: str | None = None
    expires_at: str | None = None
    execution_type: str | None = None
    execution_version: int | str | None = None
    record_id: str | None = None
    parameters: dict[str, Any] | None = None
    link: str | None = None
    token: str | None = None

    @property
    def expires(self) -> datetime | None:
        """``expires_at`` as a datetime (None when absent or not ISO 8601)."""
        if not self.expires_at:
            return None
        try:
            return datetime.fromisoformat(self.expires_at.replace("Z", "+00:00"))
        except ValueError:
            return None

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """Fields as rich would show them: no parameter values, no link, no token."""
        shown: list[tuple[str, Any]] = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "parameters":
                shown.append(("parameter_names", sorted(value)))
            elif name in _HIDDEN:
                shown.append((name, "***"))
            else:
                shown.append((name, value))
        return shown

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.__rich_repr__())
        return f"Execution({shown})"

    __str__ = __repr__


class ExecutionOutcome(WorkflowOutcome[R], Generic[R], frozen=True, kw_only=True):
    """What ``execute_and_wait`` returns: a :class:`WorkflowOutcome` (final state, result,
    channel, elapsed) plus the ``execution`` as ``POST /workflows`` answered it. Generic over
    the result type like :class:`WorkflowOutcome`."""

    execution: Execution
