"""OpenTelemetry spans and metrics, when the ``otel`` extra is installed (``opentelemetry-api``).

Invariants: nothing here imports ``opentelemetry`` until :func:`load` is called, and a missing
package makes :func:`load` return None (then the library does no OpenTelemetry work at all);
span names are low-cardinality (``GET /workflows/{id}``, ``workflows.wait``), and no span or
metric attribute holds a token, a secret, a parameter value or personal data (workflow ids
appear as span attributes only, never in names or metric attributes).

Cross-process link: the receiver's span context travels with the event over the bus as a W3C
``traceparent`` string, and the wait that the event finishes links to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the extra is a dev dependency, so the types are known to mypy
    from opentelemetry.metrics import Meter, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["OTel", "load"]

SCOPE = "workflows_async"
_MAX_ATTRIBUTE_SETS = 1024


def _endpoint(method: str, route: str, server: str) -> dict[str, Any]:
    """The attributes naming an endpoint (``route`` is ``"GET /workflows/{id}"``)."""
    return {
        "http.request.method": method,
        "url.template": route.partition(" ")[2],
        "server.address": server,
    }


def _remember(cache: dict[Any, dict[str, Any]], key: Any, attributes: dict[str, Any]) -> None:
    if len(cache) >= _MAX_ATTRIBUTE_SETS:
        cache.clear()  # endpoints and outcomes are few; this only keeps a bug from growing it
    cache[key] = attributes


def load(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> OTel | None:
    """The adapter, or None when ``opentelemetry-api`` is not installed."""
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return None
    from ._version import __version__

    tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
    meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
    return OTel(tracer, meter)


class OTel:
    """Spans and instruments for the Recorder (see :mod:`workflows_async._metrics`)."""

    def __init__(self, tracer: Tracer, meter: Meter) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._status = trace.Status
        self._error = trace.StatusCode.ERROR
        self._client = trace.SpanKind.CLIENT
        self._server = trace.SpanKind.SERVER
        self._propagator = TraceContextTextMapPropagator()
        self.tracer = tracer
        # Whether a span can record, known without starting one (a no-op span costs a
        # microsecond per webhook): never with the API's no-op tracer; with a tracer of the
        # global provider (a ProxyTracer) only once it has a real tracer or an SDK's provider
        # is set, the very test the proxy makes (where this API version lets us look).
        self._never_records = isinstance(tracer, trace.NoOpTracer)
        self._proxy: trace.ProxyTracer | None = None
        if (
            isinstance(tracer, trace.ProxyTracer)
            and hasattr(tracer, "_real_tracer")
            and hasattr(trace, "_TRACER_PROVIDER")
        ):
            self._proxy = tracer
        # Attribute sets, built once per endpoint (and outcome) and never changed afterwards:
        # the same few recur on every call, and what is given to the API or SDK is only read or
        # copied there.
        self._span_attributes: dict[tuple[str, str, int | None], dict[str, Any]] = {}
        self._duration_attributes: dict[tuple[str, str, int | None, str | None], dict[str, Any]]
        self._duration_attributes = {}
        self.call_duration = meter.create_histogram(
            "http.client.request.duration", unit="s", description="Duration of API calls"
        )
        self.retries = meter.create_counter(
            "workflows.retries", unit="{request}", description="API requests sent again"
        )
        self.token_requests = meter.create_counter(
            "workflows.token_requests", unit="{request}", description="authorize/refresh"
        )
        self.key_fetches = meter.create_counter(
            "workflows.key_fetches", unit="{request}", description="signing-key fetches"
        )
        self.waits = meter.create_counter(
            "workflows.waits", unit="{wait}", description="Waits ended, by channel or outcome"
        )
        self.waits_pending = meter.create_up_down_counter(
            "workflows.waits.pending", unit="{wait}", description="Waits in progress"
        )
        self.wait_duration = meter.create_histogram(
            "workflows.wait.duration", unit="s", description="Duration of finished waits"
        )
        self.webhooks = meter.create_counter(
            "workflows.webhooks", unit="{webhook}", description="Webhook deliveries by outcome"
        )
        self.webhooks_lost = meter.create_counter(
            "workflows.webhooks.lost",
            unit="{webhook}",
            description="Completions found by a poll whose webhook never came",
        )
        self.polls = meter.create_counter(
            "workflows.polls", unit="{request}", description="Status polls sent"
        )
        self.rate_limited = meter.create_counter(
            "workflows.polls.rate_limited", unit="{response}", description="429s met by polls"
        )

    # -- spans ---------------------------------------------------------------------------------

    def call_span(self, method: str, route: str, server: str, port: int | None) -> Span:
        """``route`` is ``"GET /workflows/{id}"``: the span's name; its path is ``url.template``."""
        key = (route, server, port)
        attributes = self._span_attributes.get(key)
        if attributes is None:
            attributes = _endpoint(method, route, server)
            if port is not None:
                attributes["server.port"] = port
            _remember(self._span_attributes, key, attributes)
        return self.tracer.start_span(route, kind=self._client, attributes=attributes)

    def record_call(
        self,
        method: str,
        route: str,
        server: str,
        status: int | None,
        error: str | None,
        elapsed: float,
    ) -> None:
        """One attempt's duration, by endpoint and outcome (``error``: why there was no answer,
        or None)."""
        key = (route, server, status, error)
        attributes = self._duration_attributes.get(key)
        if attributes is None:
            attributes = _endpoint(method, route, server)
            if status is not None:
                attributes["http.response.status_code"] = status
            if error is not None or (status is not None and status >= 400):
                attributes["error.type"] = error or str(status)
            _remember(self._duration_attributes, key, attributes)
        self.call_duration.record(elapsed, attributes)

    def end_call(
        self, span: Span, status: int | None, error_type: str | None, attempts: int
    ) -> None:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if attempts > 1:
            span.set_attribute("http.request.resend_count", attempts - 1)
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(self._status(self._error))
        span.end()

    def may_record(self) -> bool:
        """False when no span started now can record (no SDK): then there is no need to start
        one. True when one may (its ``is_recording()`` tells)."""
        if self._never_records:
            return False
        proxy = self._proxy
        return (
            proxy is None
            or proxy._real_tracer is not None
            or self._trace._TRACER_PROVIDER is not None
        )

    def carried(self) -> Span | None:
        """What a span started now would be when none can record (``may_record`` False): the
        current span when it carries a valid context (e.g. an incoming ``traceparent``), as the
        no-op tracer would hand it back, else None (nothing to record or carry)."""
        current = self._trace.get_current_span()
        return current if current.get_span_context().is_valid else None

    def start_span(self, name: str, attributes: dict[str, Any], *, server: bool = False) -> Span:
        kind = self._server if server else self._trace.SpanKind.INTERNAL
        return self.tracer.start_span(name, kind=kind, attributes=attributes)

    @contextlib.contextmanager
    def current(self, span: Span) -> Iterator[None]:
        """Make ``span`` the parent of the spans started inside (tasks created there too)."""
        with self._trace.use_span(span, end_on_exit=False):
            yield

    def fail(self, span: Span, error_type: str) -> None:
        span.set_attribute("error.type", error_type)
        span.set_status(self._status(self._error))

    def traceparent(self, span: Span) -> str | None:
        """``span``'s context as a W3C ``traceparent`` value, to travel with an event."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return carrier.get("traceparent")

    def link(self, span: Span, traceparent: str, attributes: dict[str, Any]) -> None:
        """Link ``span`` to the (possibly remote) span a ``traceparent`` names."""
        context = self._propagator.extract({"traceparent": traceparent})
        remote = self._trace.get_current_span(context).get_span_context()
        if not remote.is_valid:
            return
        if hasattr(span, "add_link"):  # opentelemetry-api >= 1.23
            span.add_link(remote, attributes)
            return
        # Older APIs take links only at creation: a short child span carries it.
        with self._trace.use_span(span, end_on_exit=False):
            link = self._trace.Link(remote, attributes)
            self.tracer.start_span("workflows.webhook.link", links=[link]).end()
