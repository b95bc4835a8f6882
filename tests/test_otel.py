"""The OpenTelemetry adapter, read back through the SDK's in-memory exporter and reader."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from workflows_async import _otel
from workflows_async._metrics import Recorder

WID = "0b6f9c1e-7a42-4c1e-9d55-3f1c2b8e4a10"


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def recorder(self, **options: Any) -> Recorder:
        otel = _otel.load(self.tracer_provider, self.meter_provider)
        assert otel is not None
        return Recorder(otel=otel, server_address="api.example.test", server_port=443, **options)

    def finished(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.spans.get_finished_spans())

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.tracer_provider.shutdown()
    t.meter_provider.shutdown()


def test_a_call_is_one_client_span_with_semantic_attributes(telemetry: Telemetry) -> None:
    rec = telemetry.recorder()
    call = rec.call_started("GET", f"/workflows/{WID}")
    rec.attempt(call, 503, 0.01)
    rec.retry(call, 0.1, "status 503")
    rec.attempt(call, 200, 0.01)
    rec.call_ended(call, 200)
    (span,) = telemetry.finished()
    assert span.name == "GET /workflows/{id}"
    assert span.kind == SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.template"] == "/workflows/{id}"
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "api.example.test" and attrs["server.port"] == 443
    assert attrs["http.request.resend_count"] == 1
    assert WID not in span.name and all(WID not in str(v) for v in attrs.values())
    points = telemetry.metrics()["http.client.request.duration"]
    assert sum(p.count for p in points) == 2
    assert {p.attributes.get("http.response.status_code") for p in points} == {200, 503}
    retries = telemetry.metrics()["workflows.retries"]
    assert sum(p.value for p in retries) == 1


def test_a_failed_call_marks_its_span(telemetry: Telemetry) -> None:
    rec = telemetry.recorder()
    call = rec.call_started("POST", "/cases")
    rec.attempt(call, None, 0.5, error="timed out")
    rec.call_ended(call, None, "RequestTimeout")
    (span,) = telemetry.finished()
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "RequestTimeout"


def test_every_call_and_outcome_of_one_endpoint_keeps_its_own_attributes(
    telemetry: Telemetry,
) -> None:
    """Attribute sets are built once per endpoint and outcome: what one call's span gets at its
    end never shows on the next one's, and each outcome's durations keep their own."""
    rec = telemetry.recorder()
    outcomes: list[tuple[int | None, str | None]] = [
        (503, "ServerError"),
        (None, "RequestTimeout"),
        (200, None),
        (503, "ServerError"),
        (200, None),
    ]
    for status, error in outcomes:
        call = rec.call_started("GET", f"/workflows/{WID}")
        rec.attempt(call, status, 0.01, error="timed out" if status is None else None)
        rec.call_ended(call, status, error)
    spans = telemetry.finished()
    assert len(spans) == 5
    for span, (status, error) in zip(spans, outcomes, strict=True):
        attrs = dict(span.attributes or {})
        assert attrs.get("error.type") == error
        assert attrs.get("http.response.status_code") == status
        assert attrs["url.template"] == "/workflows/{id}" and attrs["server.port"] == 443
    points = telemetry.metrics()["http.client.request.duration"]
    by_status = {p.attributes.get("http.response.status_code"): p for p in points}
    assert {status: p.count for status, p in by_status.items()} == {503: 2, None: 1, 200: 2}
    assert by_status[503].attributes["error.type"] == "503"
    assert by_status[None].attributes["error.type"] == "timed out"
    assert "error.type" not in by_status[200].attributes


def test_a_call_sampled_out_has_no_span_and_still_counts(telemetry: Telemetry) -> None:
    tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.spans))
    otel = _otel.load(tracer_provider, telemetry.meter_provider)
    assert otel is not None
    rec = Recorder(otel=otel, server_address="api.example.test", server_port=443)
    call = rec.call_started("GET", f"/workflows/{WID}")
    assert call.span is None  # nothing would record it: no span work at its end
    rec.attempt(call, 200, 0.01)
    rec.call_ended(call, 200)
    assert telemetry.finished() == ()
    points = telemetry.metrics()["http.client.request.duration"]
    assert sum(p.count for p in points) == 1
    assert rec.snapshot().calls["GET /workflows/{id}"].ok == 1


def test_calls_inside_a_wait_are_its_children_and_polls_too(telemetry: Telemetry) -> None:
    rec = telemetry.recorder()
    handle = rec.wait_started("run_and_wait")
    with rec.wait_context(handle):
        run = rec.call_started("POST", "/workflows/run")
        rec.attempt(run, 200, 0.01)
        rec.call_ended(run, 200)
    rec.wait_id(handle, WID)
    with rec.poll_context(WID):  # the scheduler's task, outside the wait's own context
        poll = rec.call_started("GET", f"/workflows/{WID}")
        rec.attempt(poll, 200, 0.01)
        rec.call_ended(poll, 200)
    rec.poll_sent(WID)
    rec.wait_finished(handle, "poll")
    spans = {s.name: s for s in telemetry.finished()}
    wait = spans["workflows.run_and_wait"]
    assert spans["POST /workflows/run"].parent is not None
    assert spans["POST /workflows/run"].parent.span_id == wait.context.span_id
    assert spans["GET /workflows/{id}"].parent.span_id == wait.context.span_id  # type: ignore[union-attr]
    attrs = dict(wait.attributes or {})
    assert attrs["workflows.channel"] == "poll" and attrs["workflows.polls"] == 1
    assert attrs["workflows.workflow_id"] == WID
    metrics = telemetry.metrics()
    assert [p.attributes for p in metrics["workflows.waits"]] == [
        {"workflows.outcome": "finished", "workflows.channel": "poll"}
    ]
    assert sum(p.value for p in metrics["workflows.polls"]) == 1
    assert sum(p.value for p in metrics["workflows.waits.pending"]) == 0


def test_the_wait_links_to_the_webhook_span_carried_by_the_event(telemetry: Telemetry) -> None:
    receiver = telemetry.recorder()  # another process, in real life
    waiter = telemetry.recorder()
    handle = waiter.wait_started("wait", WID)
    span = receiver.webhook_span()
    assert span is not None and receiver.otel is not None
    traceparent = receiver.otel.traceparent(span)
    assert traceparent is not None and traceparent.startswith("00-")
    receiver.webhook_accepted(span)
    waiter.wait_finished(handle, "webhook", traceparent=traceparent)
    spans = {s.name: s for s in telemetry.finished()}
    hook, wait = spans["workflows.webhook"], spans["workflows.wait"]
    assert hook.kind == SpanKind.SERVER
    assert [link.context.span_id for link in wait.links] == [hook.context.span_id]
    assert [p.attributes for p in telemetry.metrics()["workflows.webhooks"]] == [
        {"outcome": "accepted"}
    ]


def test_refused_webhooks_and_lost_ones_are_metrics(telemetry: Telemetry) -> None:
    clock = [0.0]
    rec = telemetry.recorder(clock=lambda: clock[0], lost_grace=30.0)
    rec.receiver_mounted = True
    rec.webhook_refused(rec.webhook_span(), "bad_signature", 401, "bad signature")
    rec.polled_terminal(WID)
    clock[0] = 31.0
    rec.snapshot()
    metrics = telemetry.metrics()
    assert [p.attributes for p in metrics["workflows.webhooks"]] == [
        {"outcome": "refused", "reason": "bad_signature"}
    ]
    assert sum(p.value for p in metrics["workflows.webhooks.lost"]) == 1
    (span,) = telemetry.finished()
    assert span.status.status_code == StatusCode.ERROR


def test_a_bad_traceparent_is_ignored(telemetry: Telemetry) -> None:
    rec = telemetry.recorder()
    handle = rec.wait_started("wait", WID)
    rec.wait_finished(handle, "webhook", traceparent="00-garbage")
    (span,) = telemetry.finished()
    assert not span.links


def test_nothing_is_imported_when_the_extra_is_missing() -> None:
    """Blocks ``opentelemetry`` as if it were not installed, then uses the library."""
    script = textwrap.dedent(
        """
        import sys

        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(name)
                return None

        sys.meta_path.insert(0, Missing())
        import workflows_async
        from workflows_async import _otel
        from workflows_async._metrics import Recorder

        assert _otel.load() is None
        rec = Recorder(otel=_otel.load())
        call = rec.call_started("GET", "/workflows/x")
        rec.attempt(call, 200, 0.001)
        rec.call_ended(call, 200)
        rec.wait_finished(rec.wait_started("wait", "x"), "poll")

        import asyncio

        async def main():
            async with workflows_async.Session(
                "http://127.0.0.1:1", workflows_async.TokenAuth("t"), allow_insecure_http=True,
                retry=workflows_async.RetryPolicy.none(),
            ) as session:
                session.webhook_app()
                try:
                    await session.get_workflow("x")
                except workflows_async.TransportError:
                    pass
                assert session.stats().calls["GET /workflows/{id}"].transport == 1
            try:
                workflows_async.Session("http://127.0.0.1:1", opentelemetry=True,
                                        allow_insecure_http=True)
            except workflows_async.ConfigurationError as exc:
                assert "otel extra" in str(exc)
            else:
                raise AssertionError("opentelemetry=True without the extra was accepted")

        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        print("ok")
        """
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_importing_the_package_does_not_import_opentelemetry() -> None:
    script = (
        "import sys, workflows_async;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_wait_starts_no_span_without_an_sdk_but_carries_a_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NonRecordingSpan, NoOpTracerProvider, SpanContext, TraceFlags

    from workflows_async import _otel

    otel = _otel.load(NoOpTracerProvider(), NoOpMeterProvider())
    assert otel is not None and not otel.may_record()

    def start_span(*args: object, **kwargs: object) -> None:
        raise AssertionError("a span was started")

    monkeypatch.setattr(otel.tracer, "start_span", start_span)
    rec = Recorder(otel=otel)
    alone = rec.wait_started("wait", WID)
    assert alone.span is None  # nothing to record or carry
    parent = NonRecordingSpan(
        SpanContext(0x1F, 0x2F, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    with trace.use_span(parent):  # e.g. an incoming traceparent, no SDK
        carried = rec.wait_started("wait", WID)
    assert carried.span is parent  # API calls inside the wait stay in the caller's trace
    rec.wait_finished(alone, "poll")
    rec.wait_finished(carried, "webhook")
    assert rec.waits_pending == 0
