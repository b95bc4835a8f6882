"""What the Simulator saw and did, as plain frozen records for tests to assert on.

Invariants: a record is written once, when its request was answered or its delivery attempt
ended, and never changed; records hold ids and statuses only, never bodies, tokens or secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

__all__ = ["Outcome", "RecordLog", "RequestRecord", "WebhookAttempt"]

T = TypeVar("T")


class RecordLog(list[T]):
    """A list of records that keeps only the newest ``limit`` (None: keeps all).

    Trimmed in steps (a quarter of the limit at a time), so appending stays cheap."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        if limit is not None and limit < 1:
            raise ValueError("a log limit must be at least 1")
        self.limit = limit

    def append(self, record: T) -> None:
        super().append(record)
        if self.limit is not None and len(self) > self.limit + max(1, self.limit // 4):
            del self[: len(self) - self.limit]


Outcome = int | Literal["timeout", "error", "dropped"]
"""An HTTP status the receiver answered, or why there is none."""

Fault = Literal["error", "error_after_effect", "disconnect", "key_error", "tokens_revoked"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the Simulator received."""

    method: str
    path: str
    """The path as requested, without the query string."""
    route: str
    """``"POST /workflows/run"``, ``"GET /workflows/{id}"``, ...; ``"GET <unmatched>"`` if none."""
    status: int
    """The status answered (for a disconnect: the status line sent before the cut)."""
    api_version: int | None
    """The version the ``Accept`` header chose; None when not negotiated (key endpoint, 406)."""
    time: float
    """Wall-clock time (``time.time()``) the request arrived."""
    duration: float
    """Seconds from arrival to answer, injected latency included."""
    request_id: str
    """The ``X-Request-Id`` sent back."""
    fault: Fault | None = None
    """The injected fault that shaped this answer, if any."""


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One attempt to deliver one webhook event to one URL (or the record that it was dropped)."""

    url: str
    event_id: str
    workflow_id: str
    status: str
    """The workflow status the event announces."""
    attempt: int
    """1 for the first try, 2 for the first retry, ...; 0 for a dropped event."""
    outcome: Outcome
    time: float
    """Wall-clock time the attempt ended."""
    duplicate: bool = False
    """True for the second copy of an event chosen by ``Faults.duplicate_webhooks``."""
    signature: Literal["valid", "bad_signature", "unknown_kid"] = "valid"
    """How the event was signed."""

    @property
    def ok(self) -> bool:
        """The receiver acknowledged with a 2xx."""
        return isinstance(self.outcome, int) and 200 <= self.outcome < 300
