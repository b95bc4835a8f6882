"""The one mutable place where a Session's components report what they do.

Every component (HTTP client, auth, key store, receiver, waiting engine, poll scheduler) is
given the Session's :class:`Recorder` and calls it; the Recorder counts (for
``session.stats()``), logs under the ``workflows_async`` logger tree, and forwards to
OpenTelemetry when the extra is active (:mod:`workflows_async._otel`).

Invariants: a Recorder method never raises and never awaits; nothing it logs or exports holds a
token, a secret, a parameter value or personal data: paths become templates
(:func:`route`), reasons are codes or exception class names, ids (workflow, kid) appear only
in DEBUG/INFO messages and span attributes, never in metric attributes or span names; the
lost-webhook bookkeeping is bounded (``max_tracked`` workflows) and needs no task of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Self

from ._api_errors import request_id as request_id_of
from ._lost import LostWebhooks
from .errors import WorkflowTimeout
from .stats import CallStats, PollStats, Stats, WaitStats, WebhookStats, _frozen

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ._otel import OTel

__all__ = ["CallHandle", "Recorder", "WaitHandle", "route"]

http_log = logging.getLogger("workflows_async.http")
auth_log = logging.getLogger("workflows_async.auth")
keys_log = logging.getLogger("workflows_async.keys")
wait_log = logging.getLogger("workflows_async.waiting")
poll_log = logging.getLogger("workflows_async.polling")
hook_log = logging.getLogger("workflows_async.webhooks")

# Path segments that are names, not values. Any other segment is shown as a placeholder, so a
# template never carries an id or anything else the caller put in a path.
_LITERALS = frozenset(
    {"auth", "authorize", "refresh", "webhooks", "key", "cases", "parameters", "workflows",
     "run", "result", "tables", "records", "executions"}
)  # fmt: skip
_PLACEHOLDER = {"key": "{kid}", "tables": "{table_id}"}

publish_outcome: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "workflows_async_publish_outcome", default=None
)
"""Set by the waiting engine while it publishes an event, read by the receiver that awaited it:
``duplicate`` (acknowledged, published before), ``in_progress`` (another process publishes
it now), ``not_published`` (the bus is down and nobody here needed it)."""

renewal_reason: contextvars.ContextVar[str] = contextvars.ContextVar(
    "workflows_async_renewal_reason", default="no token yet, or it expires soon"
)
"""Why a token request goes out, for its log line (set around a renewal after a 401)."""
_ROUTES: dict[tuple[str, str], str] = {}
_MAX_ROUTES = 4096


def route(method: str, path: str) -> str:
    """``"GET /workflows/{id}"`` for ``("GET", "/workflows/0b6f...")``: the endpoint template."""
    key = (method, path)
    found = _ROUTES.get(key)
    if found is not None:
        return found
    out: list[str] = []
    previous = ""
    for segment in path.split("?", 1)[0].split("/"):
        if not segment or segment in _LITERALS:
            out.append(segment)
        else:
            out.append(_PLACEHOLDER.get(previous, "{id}"))
        previous = segment
    template = f"{method} {'/'.join(out)}"
    if len(_ROUTES) >= _MAX_ROUTES:
        _ROUTES.clear()  # paths hold ids: keep the memo from growing without end
    _ROUTES[key] = template
    return template


def status_class(status: int | None) -> int:
    """Index into a call's counts: 0 = 2xx, 1 = 4xx (and 1xx/3xx), 2 = 5xx, 3 = no answer."""
    if status is None:
        return 3
    if 200 <= status < 300:
        return 0
    return 2 if status >= 500 else 1


class CallHandle:
    """One API call in progress (all its attempts): for its span and its attempt numbers."""

    __slots__ = ("attempts", "method", "path", "span", "template")

    def __init__(self, method: str, path: str, template: str, span: Span | None) -> None:
        self.method = method
        self.path = path
        self.template = template
        self.span = span
        self.attempts = 0


class WaitHandle:
    """One ``run_and_wait``/``wait`` call in progress, and (from :meth:`Recorder.waiting`) the
    context manager around it: one small object per wait, no generator frame."""

    __slots__ = ("_context", "_recorder", "ended", "kind", "span", "started", "workflow_id")

    def __init__(self, kind: str, workflow_id: str, started: float, span: Span | None) -> None:
        self.ended = False
        self.kind = kind
        self.workflow_id = workflow_id
        self.started = started
        self.span = span
        self._recorder: Recorder | None = None
        self._context: AbstractContextManager[None] | None = None

    def __enter__(self) -> Self:
        recorder = self._recorder
        if self.span is not None and recorder is not None:
            self._context = recorder.wait_context(self)
            self._context.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(exc_type, exc, tb)
        recorder = self._recorder
        if recorder is None or self.ended:
            return
        if exc is None:  # pragma: no cover - a return without wait_finished: a bug
            recorder.wait_failed(self, "failed", "no outcome reported")
        elif isinstance(exc, WorkflowTimeout):
            recorder.wait_failed(self, "timed_out", type(exc).__name__)
        elif isinstance(exc, asyncio.CancelledError):
            recorder.wait_failed(self, "cancelled", type(exc).__name__)
        else:
            recorder.wait_failed(self, "failed", type(exc).__name__)


# The attribute sets of accepted deliveries, built once and never changed (the API and the
# SDK only read or copy what they are given).
_ACCEPTED: dict[str, str] = {"outcome": "accepted"}
_DUPLICATE: dict[str, str] = {"outcome": "duplicate"}


class Recorder:
    """Counters, log lines and telemetry for one Session (see the module docstring).

    ``lost_grace``: seconds after a poll found a workflow's end within which its webhook must
    come, or it counts as lost. ``warn_interval``: at most one "webhooks are not arriving"
    WARNING per interval, when the receiver is mounted and most completions in the interval
    (at least ``warn_min`` of them) were found by polling.
    """

    def __init__(
        self,
        *,
        otel: OTel | None = None,
        server_address: str = "",
        server_port: int | None = None,
        lost_grace: float = 30.0,
        warn_interval: float = 300.0,
        warn_min: int = 3,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.otel = otel
        self.server_address = server_address
        self.server_port = server_port
        self._clock = clock
        # [2xx, 4xx, 5xx, transport, seconds] by template
        self.calls: dict[str, list[float]] = {}
        self.retries = 0
        self.token_requests = 0
        self.key_fetches = 0
        self.webhooks_accepted = 0
        self.webhooks_duplicate = 0
        self.webhooks_refused: dict[str, int] = {}
        self.webhooks_delivered = 0
        self.webhooks_lost = 0
        self.waits_pending = 0
        self.waits_finished: dict[str, int] = {}
        self.waits_timed_out = 0
        self.waits_failed = 0
        self.waits_cancelled = 0
        self.wait_seconds = 0.0
        self.polls_sent = 0
        self.polls_rate_limited = 0
        self.poll_state: Callable[[], tuple[float, bool, int]] = lambda: (0.0, False, 0)
        """Set by the poll scheduler: (current rate, paused, workflows scheduled)."""
        self.receiver_mounted = False
        # Per-workflow bookkeeping while waits are pending: polls by workflow (a key while a
        # local wait of it is pending), and the count of its further local waits, for the few
        # workflows with more than one (one wait, the usual case, costs no slot here).
        self._polls: dict[str, int] = {}
        self._more_waits: dict[str, int] = {}
        self._wait_spans: dict[str, Span] = {}
        self.lost = LostWebhooks(
            grace=lost_grace,
            interval=warn_interval,
            warn_min=warn_min,
            max_tracked=max_tracked,
            clock=clock,
        )

    @property
    def clock(self) -> Callable[[], float]:
        """The clock of wait durations (a wait handle's ``started``)."""
        return self._clock

    # -- HTTP ----------------------------------------------------------------------------------

    def call_started(self, method: str, path: str) -> CallHandle:
        template = _ROUTES.get((method, path)) or route(method, path)  # a call less when known
        span = None
        if self.otel is not None:
            span = self.otel.call_span(method, template, self.server_address, self.server_port)
            if not span.is_recording():
                span = None  # no SDK, or sampled out: ending it would do nothing either
        return CallHandle(method, path, template, span)

    def attempt(
        self,
        call: CallHandle,
        status: int | None,
        elapsed: float,
        *,
        request_id: str | None = None,
        error: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """One attempt of ``call`` got ``status`` (None: no answer, ``error`` says why).
        ``headers``: the answer's, where the request id is looked up when the attempt is logged
        (an explicit ``request_id`` is used as it is)."""
        call.attempts += 1
        counts = self.calls.get(call.template)
        if counts is None:
            counts = self.calls[call.template] = [0, 0, 0, 0, 0.0]
        counts[status_class(status)] += 1
        counts[4] += elapsed
        if http_log.isEnabledFor(logging.DEBUG):
            if request_id is None and headers is not None:
                request_id = request_id_of(headers)
            http_log.debug(
                "%s -> %s in %.1f ms (attempt %d, path %s, request id %s)",
                call.template,
                status if status is not None else error,
                elapsed * 1000,
                call.attempts,
                call.path,
                request_id or "-",
                extra={
                    "http_method": call.method,
                    "url_template": call.template,
                    "http_status": status,
                    "attempt": call.attempts,
                    "elapsed_ms": round(elapsed * 1000, 3),
                    "request_id": request_id,
                },
            )
        if self.otel is not None:
            self.otel.record_call(
                call.method, call.template, self.server_address, status, error, elapsed
            )

    def retry(self, call: CallHandle, delay: float, reason: str) -> None:
        """``call`` is sent again after ``delay`` seconds because of ``reason`` (a code)."""
        self.retries += 1
        http_log.info(
            "retrying %s in %.2f s (attempt %d failed: %s)",
            call.template,
            delay,
            call.attempts,
            reason,
            extra={"url_template": call.template, "attempt": call.attempts, "reason": reason},
        )
        if self.otel is not None:
            self.otel.retries.add(1, {"url.template": call.template.partition(" ")[2]})

    def call_ended(self, call: CallHandle, status: int | None, error: str | None = None) -> None:
        if call.span is not None and self.otel is not None:
            self.otel.end_call(call.span, status, error, call.attempts)

    # -- credentials and keys ---------------------------------------------------------------

    def token_request(self, kind: str, reason: str) -> None:
        """An ``authorize`` or ``refresh`` request goes out because of ``reason``."""
        self.token_requests += 1
        auth_log.info(
            "token renewal: %s (%s)", kind, reason, extra={"kind": kind, "reason": reason}
        )
        if self.otel is not None:
            self.otel.token_requests.add(1, {"kind": kind})

    def key_fetch(self, kid: str, reason: str = "not cached, or due for a re-check") -> None:
        self.key_fetches += 1
        keys_log.info("fetching webhook signing key %s (%s)", kid, reason)
        if self.otel is not None:
            self.otel.key_fetches.add(1)

    def key_fetch_failed(self, kid: str, reason: str) -> None:
        keys_log.info("signing key %s not available: %s", kid, reason)

    # -- webhooks ------------------------------------------------------------------------------

    def webhook_span(self) -> Span | None:
        """The receiver's span for one delivery, or None when nothing would record it (no
        OpenTelemetry, no SDK configured, or sampled out): then the delivery does no further
        span work (attributes, ``traceparent``), which would be thrown away anyway."""
        otel = self.otel
        if otel is None or not otel.may_record():
            return None
        span = otel.start_span("workflows.webhook", {"http.request.method": "POST"}, server=True)
        return span if span.is_recording() else None

    def webhook_event(self, span: Span | None, workflow_id: str, status: str) -> str | None:
        """The delivery being handled is about ``workflow_id``; returns the receiver span's
        context as a ``traceparent``, to travel with the event (None without a span)."""
        if span is None or self.otel is None:
            return None
        span.set_attribute("workflows.workflow_id", workflow_id)
        span.set_attribute("workflows.status", status[:64])
        return self.otel.traceparent(span)

    def webhook_accepted(self, span: Span | None, *, duplicate: bool = False) -> None:
        if duplicate:
            self.webhooks_duplicate += 1
            outcome, attributes = "duplicate", _DUPLICATE
        else:
            self.webhooks_accepted += 1
            outcome, attributes = "accepted", _ACCEPTED
        if self.otel is not None:
            self.otel.webhooks.add(1, attributes)
            if span is not None:
                span.set_attribute("http.response.status_code", 200)
                span.set_attribute("workflows.webhook.outcome", outcome)
                span.end()

    def webhook_refused(self, span: Span | None, code: str, status: int, detail: str) -> None:
        """A delivery answered ``status``; ``code`` is a fixed reason, ``detail`` our own text
        (never the body or a header value)."""
        self.webhooks_refused[code] = self.webhooks_refused.get(code, 0) + 1
        hook_log.info(
            "webhook refused with %d (%s): %s",
            status,
            code,
            detail,
            extra={"http_status": status, "reason": code},
        )
        if self.otel is not None:
            self.otel.webhooks.add(1, {"outcome": "refused", "reason": code})
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("workflows.webhook.outcome", code)
                self.otel.fail(span, code)
                span.end()

    def event_delivered(self, workflow_id: str, terminal: bool) -> None:
        """An event for ``workflow_id`` reached this process through the bus (from any
        process's receiver)."""
        self.webhooks_delivered += 1
        if not terminal:
            return
        late = self.lost.webhook(workflow_id)
        if late is not None:
            hook_log.debug(
                "webhook for workflow %s came %.1f s after a poll found its end", workflow_id, late
            )

    def webhook_seen(self, workflow_id: str) -> bool:
        return self.lost.seen(workflow_id)

    # -- waits ---------------------------------------------------------------------------------

    def wait_started(
        self, kind: str, workflow_id: str = "", *, handle: WaitHandle | None = None
    ) -> WaitHandle:
        """One wait, from start to end, as a context manager: its span is the current one
        inside (API calls are its children), and an exception ends it as timed out,
        cancelled or failed. A wait that ends with an outcome is reported by
        :meth:`wait_finished` inside.

        ``kind``: ``run_and_wait`` or ``wait``; the id may come later (:meth:`wait_id`).
        ``handle``: one the caller made (a pending wait is its own handle), else a new one."""
        self.waits_pending += 1
        span = None
        otel = self.otel
        if otel is not None:
            if otel.may_record():
                span = otel.start_span(f"workflows.{kind}", {})
                if not span.is_recording() and not span.get_span_context().is_valid:
                    span = None  # sampled out and no parent: nothing to record or carry
            else:  # no SDK: no span to start (a microsecond per wait), a parent's to carry
                span = otel.carried()
            otel.waits_pending.add(1)
        if handle is None:
            handle = WaitHandle(kind, "", self._clock(), span)
        else:
            handle.kind, handle.started, handle.span = kind, self._clock(), span
        handle._recorder = self
        if workflow_id:
            self.wait_id(handle, workflow_id)
        return handle

    def wait_id(self, handle: WaitHandle, workflow_id: str) -> None:
        """The workflow ``handle`` waits for is known (after the run answered)."""
        handle.workflow_id = workflow_id
        polls = self._polls
        if workflow_id in polls:
            self._more_waits[workflow_id] = self._more_waits.get(workflow_id, 0) + 1
        else:
            polls[workflow_id] = 0
        if handle.span is not None:
            handle.span.set_attribute("workflows.workflow_id", workflow_id)
            self._wait_spans.setdefault(workflow_id, handle.span)
        if wait_log.isEnabledFor(logging.DEBUG):  # one call, not two, per wait when off
            wait_log.debug("wait for workflow %s started (%s)", workflow_id, handle.kind)

    waiting = wait_started  # the name that reads well in ``with recorder.waiting(kind):``

    def wait_context(self, handle: WaitHandle) -> AbstractContextManager[None]:
        """While inside, API calls are children of the wait's span."""
        if handle.span is None or self.otel is None:
            return nullcontext()
        return self.otel.current(handle.span)

    def poll_context(self, workflow_id: str) -> AbstractContextManager[None]:
        """While inside, a poll's call is a child of the span of a wait for ``workflow_id``."""
        span = self._wait_spans.get(workflow_id)
        if span is None or self.otel is None:
            return nullcontext()
        return self.otel.current(span)

    def polls_for(self, workflow_id: str) -> int:
        return self._polls.get(workflow_id, 0)

    def wait_finished(
        self, handle: WaitHandle, channel: str, *, traceparent: str | None = None
    ) -> tuple[int, bool]:
        """The wait ended with an outcome brought by ``channel``; returns (polls, webhook seen).

        ``traceparent``: the receiver span's context that came with the event, to link."""
        if handle.ended:
            return self.polls_for(handle.workflow_id), self.webhook_seen(handle.workflow_id)
        elapsed = self._clock() - handle.started
        polls = self.polls_for(handle.workflow_id)
        seen = channel == "webhook" or self.webhook_seen(handle.workflow_id)
        self._wait_done(handle)
        self.waits_finished[channel] = self.waits_finished.get(channel, 0) + 1
        self.wait_seconds += elapsed
        wait_log.info(
            "wait for workflow %s ended by %s after %d polls in %.1f s (webhook seen: %s)",
            handle.workflow_id,
            channel,
            polls,
            elapsed,
            "yes" if seen else "no",
            extra={
                "workflow_id": handle.workflow_id,
                "channel": channel,
                "polls": polls,
                "elapsed_s": round(elapsed, 3),
                "webhook_seen": seen,
            },
        )
        if self.otel is not None:
            self.otel.waits.add(1, {"workflows.outcome": "finished", "workflows.channel": channel})
            self.otel.wait_duration.record(elapsed, {"workflows.channel": channel})
            if handle.span is not None:
                handle.span.set_attribute("workflows.channel", channel)
                handle.span.set_attribute("workflows.polls", polls)
                handle.span.set_attribute("workflows.webhook_seen", seen)
                if traceparent:
                    self.otel.link(handle.span, traceparent, {"workflows.link": "webhook"})
                handle.span.end()
        return polls, seen

    def wait_failed(self, handle: WaitHandle, outcome: str, error: str) -> None:
        """The wait ended without an outcome: ``outcome`` is ``timed_out``, ``failed`` or
        ``cancelled``; ``error`` the exception's class name. No-op once the wait has ended."""
        if handle.ended:
            return
        elapsed = self._clock() - handle.started
        polls = self.polls_for(handle.workflow_id)
        self._wait_done(handle)
        if outcome == "timed_out":
            self.waits_timed_out += 1
        elif outcome == "cancelled":
            self.waits_cancelled += 1
        else:
            self.waits_failed += 1
        level = logging.DEBUG if outcome == "cancelled" else logging.INFO
        wait_log.log(
            level,
            "wait for workflow %s %s after %d polls in %.1f s (%s)",
            handle.workflow_id or "(not started)",
            outcome.replace("_", " "),
            polls,
            elapsed,
            error,
            extra={"workflow_id": handle.workflow_id, "outcome": outcome, "polls": polls},
        )
        if self.otel is not None:
            self.otel.waits.add(1, {"workflows.outcome": outcome})
            if handle.span is not None:
                handle.span.set_attribute("workflows.polls", polls)
                self.otel.fail(handle.span, error)
                handle.span.end()

    def _wait_done(self, handle: WaitHandle) -> None:
        handle.ended = True
        self.waits_pending -= 1
        if self.otel is not None:
            self.otel.waits_pending.add(-1)
        wid = handle.workflow_id
        if not wid:
            return
        if handle.span is not None and self._wait_spans.get(wid) is handle.span:
            del self._wait_spans[wid]
        more = self._more_waits.get(wid)
        if more:  # another local wait of it is still pending
            if more > 1:
                self._more_waits[wid] = more - 1
            else:
                del self._more_waits[wid]
            return
        self._polls.pop(wid, None)  # no local wait left: drop its per-workflow counts
        self._wait_spans.pop(wid, None)

    # -- polls ---------------------------------------------------------------------------------

    def poll_sent(self, workflow_id: str) -> None:
        self.polls_sent += 1
        if workflow_id in self._polls:
            self._polls[workflow_id] += 1
        if self.otel is not None:
            self.otel.polls.add(1)
        self._sweep()

    def poll_rate_limited(self, pause: float, rate: float) -> None:
        self.polls_rate_limited += 1
        poll_log.info("polls rate limited (429): pausing %.1f s, rate now %.2f/s", pause, rate)
        if self.otel is not None:
            self.otel.rate_limited.add(1)

    def polled_terminal(self, workflow_id: str) -> None:
        """A poll found ``workflow_id`` ended: its webhook should follow within the grace."""
        alarm = self.lost.polled(workflow_id, alarm=self.receiver_mounted)
        self._sweep()
        if alarm:
            polled, webhooks = self.lost.interval_polled, self.lost.interval_webhooks
            hook_log.warning(
                "webhooks are not arriving: is the webhook URL configured? "
                "(%d of %d completions in the last %.0f s were found by polling)",
                polled,
                polled + webhooks,
                self.lost.interval_age,
            )

    @property
    def webhooks_expected(self) -> bool:
        """Lost webhooks are counted only while webhooks are expected here: the receiver is
        mounted in this process, or events have come over the bus."""
        return self.receiver_mounted or self.webhooks_delivered > 0

    def _sweep(self) -> None:
        """Count as lost every awaited webhook whose grace has run out."""
        expired = self.lost.expired()
        if not expired or not self.webhooks_expected:
            return
        self.webhooks_lost += len(expired)
        for wid in expired:
            hook_log.debug(
                "webhook lost: none came for workflow %s within %.0f s of the poll that "
                "found its end",
                wid,
                self.lost.grace,
            )
        if self.otel is not None:
            self.otel.webhooks_lost.add(len(expired))

    # -- the snapshot --------------------------------------------------------------------------

    def snapshot(self) -> Stats:
        self._sweep()
        rate, paused, scheduled = self.poll_state()
        calls = {
            template: CallStats(int(c[0]), int(c[1]), int(c[2]), int(c[3]), c[4])
            for template, c in self.calls.items()
        }
        return Stats(
            calls=_frozen(calls),
            retries=self.retries,
            token_requests=self.token_requests,
            key_fetches=self.key_fetches,
            webhooks=WebhookStats(
                accepted=self.webhooks_accepted,
                duplicates=self.webhooks_duplicate,
                refused=_frozen(self.webhooks_refused),
                delivered=self.webhooks_delivered,
                lost=self.webhooks_lost,
            ),
            waits=WaitStats(
                pending=self.waits_pending,
                finished=_frozen(self.waits_finished),
                timed_out=self.waits_timed_out,
                failed=self.waits_failed,
                cancelled=self.waits_cancelled,
                seconds=self.wait_seconds,
            ),
            polls=PollStats(
                sent=self.polls_sent,
                rate_limited=self.polls_rate_limited,
                current_rate=rate,
                paused=paused,
                scheduled=scheduled,
            ),
        )
