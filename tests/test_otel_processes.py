"""Spans of a real Session, and the link between a wait and the webhook that ended it when the
webhook lands in ANOTHER process (``tests/otel_worker.py``) and travels over a real Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis_server import RedisServer
from stack import receiver

import workflows_async as wa
from workflows_async.testing import Simulator

HERE = Path(__file__).resolve().parent
SLOW_POLL = wa.PollPolicy(initial_delay=30.0)  # the webhook must win


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


async def test_spans_of_one_run_and_wait_in_one_process(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    async with Simulator(time_scale=0.02, seed=3) as sim:
        session = wa.Session(
            sim.base_url,
            wa.KeySecretAuth(sim.key, sim.secret),
            allow_insecure_http=True,
            poll=SLOW_POLL,
            tracer_provider=provider,
        )
        async with receiver(session) as url:
            sim.add_webhook_url(url)
            async with session:
                case = await session.create_case(first_name="Ada", email="ada@example.test")
                outcome = await session.run_and_wait(case.id, "kyc-basic", timeout=20)
    assert outcome.channel is wa.Channel.WEBHOOK
    found = _by_name(tuple(exporter.get_finished_spans()))
    wait = found["workflows.run_and_wait"][0]
    run = found["POST /workflows/run"][0]
    result = found["GET /workflows/{id}/result"][0]
    hook = found["workflows.webhook"][0]
    assert run.parent is not None and run.parent.span_id == wait.context.span_id
    assert result.parent is not None and result.parent.span_id == wait.context.span_id
    assert run.kind == SpanKind.CLIENT and hook.kind == SpanKind.SERVER
    assert (run.attributes or {})["http.response.status_code"] == 201
    assert (run.attributes or {})["server.address"] == "127.0.0.1"
    assert (wait.attributes or {})["workflows.channel"] == "webhook"
    assert (wait.attributes or {})["workflows.workflow_id"] == outcome.workflow.id
    assert (hook.attributes or {})["workflows.workflow_id"] == outcome.workflow.id
    assert [link.context.span_id for link in wait.links] == [hook.context.span_id]
    for span in exporter.get_finished_spans():
        assert outcome.workflow.id not in span.name
        assert "ada@example.test" not in json.dumps(dict(span.attributes or {}))


async def test_the_wait_links_to_a_webhook_received_in_another_process(
    spans: tuple[TracerProvider, InMemorySpanExporter], redis_server: RedisServer, tmp_path: Path
) -> None:
    provider, exporter = spans
    namespace = "otel-test"
    spans_file = tmp_path / "worker-spans.jsonl"
    async with Simulator(time_scale=0.02, seed=5) as sim:
        worker = subprocess.Popen(  # noqa: S603, ASYNC220 - our own script; started once
            [
                sys.executable,
                str(HERE / "otel_worker.py"),
                *("--redis", redis_server.url, "--api", sim.base_url),
                *("--key", sim.key, "--secret", sim.secret, "--namespace", namespace),
                *("--spans", str(spans_file)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert worker.stdout is not None
            ready = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 30)
            word, _, port = ready.decode().partition(" ")
            assert word == "ready" and port.strip().isdigit(), ready  # it listens on port 0
            sim.add_webhook_url(f"http://127.0.0.1:{port.strip()}/webhooks/")
            session = wa.Session(  # this process waits, and receives no webhook itself
                sim.base_url,
                wa.KeySecretAuth(sim.key, sim.secret),
                allow_insecure_http=True,
                poll=SLOW_POLL,
                bus=wa.RedisBus(redis_server.url, namespace=namespace),
                tracer_provider=provider,
            )
            async with session:
                case = await session.create_case(first_name="Ada")
                outcome = await session.run_and_wait(case.id, "kyc-basic", timeout=20)
                await sim.wait_idle(timeout=10)
        finally:
            worker.terminate()
            await asyncio.to_thread(worker.wait, 20)
    assert outcome.channel is wa.Channel.WEBHOOK and outcome.webhook_seen
    assert session.stats().webhooks.accepted == 0  # it came through Redis
    remote = [json.loads(line) for line in spans_file.read_text().splitlines() if line]
    hooks = [
        s
        for s in remote
        if s["name"] == "workflows.webhook"
        and s["attributes"].get("workflows.workflow_id") == outcome.workflow.id
        and s["attributes"].get("workflows.webhook.outcome") == "accepted"
    ]
    assert hooks, remote
    (wait,) = _by_name(tuple(exporter.get_finished_spans()))["workflows.run_and_wait"]
    links = {(link.context.trace_id, link.context.span_id) for link in wait.links}
    assert (hooks[0]["trace_id"], hooks[0]["span_id"]) in links
