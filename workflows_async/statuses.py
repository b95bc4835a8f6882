"""Workflow statuses: the names this library knows, and which of them end a workflow.

Invariants: a status is an open string (a value never seen before is simply not terminal, never
an error); statuses compare case-insensitively; no status is both a success and a failure.
Pure: nothing here does I/O or imports beyond ``errors``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "DEFAULT_STATUSES",
    "DEFAULT_SUCCESS_STATUSES",
    "StatusSet",
    "WorkflowStatus",
]


class WorkflowStatus(enum.StrEnum):
    """Status values this library knows by name, and where each comes from.

    ``COMPLETED`` is the one status the vendor's docs define; ``RUNNING`` appears in the docs'
    examples of the execution API (``POST /workflows``) and is not terminal. ``IN_PROGRESS`` and
    ``AWAITING`` are the non-terminal states of a run and of the "awaiting" webhook notice (user
    part done, background tasks still run). ``FAILED``, ``ERROR``, ``CANCELLED``/``CANCELED``,
    ``EXPIRED`` (an execution past its ``expiresAt``) and ``REJECTED`` are not documented: they
    are failure-like names this library treats as final failures should the API send them.

    A :class:`~workflows_async.models.Workflow` keeps its status as the plain string the server
    sent, so a value not listed here is never a decode error; members compare equal to those
    strings.
    """

    IN_PROGRESS = "IN_PROGRESS"
    RUNNING = "RUNNING"
    AWAITING = "AWAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"


DEFAULT_SUCCESS_STATUSES: frozenset[str] = frozenset({"COMPLETED"})
"""Documented: ``COMPLETED`` is the only success the vendor's docs name."""
DEFAULT_FAILURE_STATUSES: frozenset[str] = frozenset(
    {"FAILED", "ERROR", "CANCELLED", "CANCELED", "EXPIRED", "REJECTED"}
)
"""Not documented by the vendor: failure-like names treated as final (see WorkflowStatus)."""


class StatusSet:
    """Which statuses end a workflow, and which of those are failures.

    Statuses are compared case-insensitively. Anything not listed (``IN_PROGRESS``,
    ``RUNNING``, ``AWAITING``, a value this library has never seen) is not terminal. The
    default success set is the documented ``COMPLETED``; the default failure set holds names the
    docs do not define (see :class:`WorkflowStatus`): pass your own sets when your workflows
    use other final statuses.
    """

    __slots__ = ("failure", "success", "terminal")

    def __init__(
        self,
        success: Iterable[str] = DEFAULT_SUCCESS_STATUSES,
        failure: Iterable[str] = DEFAULT_FAILURE_STATUSES,
    ) -> None:
        self.success = frozenset(s.upper() for s in success)
        self.failure = frozenset(s.upper() for s in failure)
        if self.success & self.failure:
            raise ConfigurationError("a status cannot be both a success and a failure")
        self.terminal = self.success | self.failure

    def is_terminal(self, status: str) -> bool:
        # A status the server sent in upper case (the usual) needs no upper-casing.
        return status in self.terminal or status.upper() in self.terminal

    def is_failure(self, status: str) -> bool:
        return status.upper() in self.failure

    def is_success(self, status: str) -> bool:
        return status.upper() in self.success

    def __repr__(self) -> str:
        return f"StatusSet(success={sorted(self.success)}, failure={sorted(self.failure)})"


DEFAULT_STATUSES = StatusSet()
