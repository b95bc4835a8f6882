"""What a Session has done so far: ``session.stats()`` returns a :class:`Stats` snapshot.

Invariants: a snapshot never changes after it was taken (frozen dataclasses, read-only
mappings) and holds no id, token or personal value, only counts, endpoint templates such as
``GET /workflows/{id}``, channel names and reason codes; counters only grow, except the gauges
(``waits.pending``, ``polls.scheduled``, ``polls.current_rate``, ``polls.paused``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["CallStats", "PollStats", "Stats", "WaitStats", "WebhookStats"]


def _frozen(counts: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted(counts.items())))


@dataclasses.dataclass(frozen=True, slots=True)
class CallStats:
    """The answers one endpoint template got, by status class.

    ``transport`` counts attempts that got no HTTP answer at all (connection refused or reset,
    timeout). Every attempt counts, retries included; ``seconds`` is their total duration.
    """

    ok: int = 0
    """2xx"""
    client_errors: int = 0
    """4xx (and the redirects, which are never followed)"""
    server_errors: int = 0
    """5xx"""
    transport: int = 0
    seconds: float = 0.0

    @property
    def attempts(self) -> int:
        return self.ok + self.client_errors + self.server_errors + self.transport

    @property
    def failures(self) -> int:
        return self.client_errors + self.server_errors + self.transport


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookStats:
    """Webhook deliveries seen by this process's receiver, and completions they missed.

    ``refused`` maps a reason code to a count: ``bad_signature`` (401), ``bad_event``
    (400), ``unreadable_body`` (400), ``read_timeout`` (408), ``body_too_large`` (413),
    ``key_unavailable`` (503: signing key not fetchable now), ``in_progress`` (503: another
    process is publishing the same event), ``not_published`` (503: the bus is down),
    ``unavailable`` (503: the Session is closing), ``unexpected_error`` (503),
    ``method_not_allowed`` (405: not a POST);
    ``duplicates`` were acknowledged without publishing because the event had been published.
    ``delivered`` counts distinct events that reached this process through the bus, from any
    process's receiver. ``lost`` counts workflows whose end a poll found and for which no
    webhook came within the grace period after it (only while webhooks are expected here).
    """

    accepted: int = 0
    duplicates: int = 0
    refused: Mapping[str, int] = dataclasses.field(default_factory=lambda: _frozen({}))
    delivered: int = 0
    lost: int = 0

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


@dataclasses.dataclass(frozen=True, slots=True)
class WaitStats:
    """``run_and_wait``/``wait`` calls: how many wait now and how the others ended.

    ``finished`` maps the channel that brought the end (``run``, ``webhook``, ``poll``) to a
    count (a workflow that ended with a failure status is finished too, even when the call then
    raised :class:`WorkflowFailed`); ``timed_out``, ``failed`` (another error: the workflow does
    not exist, the result could not be fetched...) and ``cancelled`` count the waits that ended
    without an outcome; ``seconds`` is the total time of finished waits.
    """

    pending: int = 0
    finished: Mapping[str, int] = dataclasses.field(default_factory=lambda: _frozen({}))
    timed_out: int = 0
    failed: int = 0
    cancelled: int = 0
    seconds: float = 0.0

    @property
    def finished_total(self) -> int:
        return sum(self.finished.values())


@dataclasses.dataclass(frozen=True, slots=True)
class PollStats:
    """The poll scheduler: polls sent, 429s met, and its budget now.

    ``current_rate`` is the polls per second allowed now (halved by each 429, recovering step
    by step); ``paused`` is True while a 429 holds every poll back; ``scheduled`` is the number
    of workflows being polled.
    """

    sent: int = 0
    rate_limited: int = 0
    current_rate: float = 0.0
    paused: bool = False
    scheduled: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a Session's counters (see the module docstring).

    ``calls`` maps an endpoint template (``"GET /workflows/{id}"``) to its :class:`CallStats`;
    ``retries`` counts resent requests, ``token_requests`` authorize/refresh requests,
    ``key_fetches`` webhook signing-key fetches.
    """

    calls: Mapping[str, CallStats] = dataclasses.field(default_factory=lambda: _frozen({}))
    retries: int = 0
    token_requests: int = 0
    key_fetches: int = 0
    webhooks: WebhookStats = dataclasses.field(default_factory=WebhookStats)
    waits: WaitStats = dataclasses.field(default_factory=WaitStats)
    polls: PollStats = dataclasses.field(default_factory=PollStats)

    def call_count(self, template: str | None = None) -> int:
        """Attempts sent to one endpoint template, or to all of them."""
        if template is not None:
            found = self.calls.get(template)
            return 0 if found is None else found.attempts
        return sum(c.attempts for c in self.calls.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and numbers (for JSON, a metrics endpoint or a log line)."""
        return _plain(self)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value
