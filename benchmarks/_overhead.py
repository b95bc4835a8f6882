"""Benchmark 1: what one ``Session.get_workflow`` call costs next to raw aiohttp and httpx.

The server is a helper process answering every request with the same workflow JSON at almost
no cost, so the figures are the clients' own. Each client sends the same headers and decodes
the body (``json.loads`` for the raw clients, the msgspec model for the Session). Repetitions
run the clients interleaved, in a rotating order; each repetition's ratio to raw aiohttp
(measured beside it) is paired, and the median ratio with its spread is reported; a goal is
judged only when the whole spread is on one side of it.

Telemetry: the plain ``Session`` runs with the library's loggers at WARNING and OpenTelemetry
off (what a user without the ``otel`` extra gets); "Session + OTel API" has the extra installed
but no SDK configured (spans are non-recording); "Session + OTel SDK" records every span through
the SDK (a span processor that exports to nowhere) and every metric into an in-memory reader.
"SDK floor" is raw aiohttp plus exactly the SDK work the Session asks for per call (one client
span with the same attributes, its status set at the end, one duration record), through the
same providers: what any client recording through this SDK pays at least. The traced Session
is judged against it too, since its ratio to raw aiohttp is mostly the SDK's.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import httpx
from _proc import Child
from _report import CONCURRENCY, Mode, Row, Section, judge, median, paired

import workflows_async as wa

__all__ = ["run"]

try:  # the SDK comes with the dev extra; without it the traced rows are left out
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind
except ImportError:  # pragma: no cover - the dev extra has it
    TracerProvider = None  # type: ignore[assignment,misc]

Call = Callable[[], Awaitable[object]]


async def _burst(call: Call, calls: int) -> tuple[float, float]:
    """``calls`` calls, CONCURRENCY at a time: (wall seconds, CPU seconds)."""
    remaining = iter(range(calls))

    async def worker() -> None:
        for _ in remaining:
            await call()

    gc.collect()  # a client's garbage is collected on its own time, not on the next one's
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def run(mode: Mode) -> Section:
    section = Section(1, f"per-call overhead: get_workflow, {CONCURRENCY} concurrent")
    workflow_id = str(uuid.uuid4())
    body = json.dumps({"id": workflow_id, "caseId": str(uuid.uuid4()), "status": "IN_PROGRESS"})
    async with await Child.start("fixed", {"body": body}) as server:
        base_url = server.info["url"]
        logging.getLogger("workflows_async").setLevel(logging.WARNING)
        session = wa.Session(
            base_url, wa.TokenAuth("bench-token"), allow_insecure_http=True, opentelemetry=False
        )
        sessions = [session]
        headers = dict(session._http._headers)  # the very headers the Session sends
        headers["Authorization"] = "Bearer bench-token"
        url = f"{base_url}/workflows/{workflow_id}"
        raw = aiohttp.ClientSession()
        hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))

        async def raw_call() -> object:
            async with raw.get(url, headers=headers) as response:
                payload = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"raw aiohttp: {response.status}")
                return json.loads(payload)

        async def httpx_call() -> object:
            response = await hx.get(url, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"httpx: {response.status_code}")
            return json.loads(response.content)

        async def session_call() -> object:
            return await session.get_workflow(workflow_id)

        clients: dict[str, Call] = {
            "raw aiohttp": raw_call,
            "Session": session_call,
            "httpx": httpx_call,
        }
        if TracerProvider is not None:
            api_only = wa.Session(base_url, wa.TokenAuth("bench-token"), allow_insecure_http=True)
            tracer_provider = TracerProvider()
            tracer_provider.add_span_processor(SimpleSpanProcessor(_Nowhere()))
            meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
            traced = wa.Session(
                base_url,
                wa.TokenAuth("bench-token"),
                allow_insecure_http=True,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
            )
            sessions += [api_only, traced]

            async def api_only_call() -> object:
                return await api_only.get_workflow(workflow_id)

            async def traced_call() -> object:
                return await traced.get_workflow(workflow_id)

            # The SDK's own work for one call, with no library around it: the span the Session
            # starts (same name, kind and attributes, the status set at the end) and the one
            # duration record (same attributes), through the same providers. Nothing that
            # records through this SDK can cost less per call.
            sdk_tracer = tracer_provider.get_tracer("benchmark")
            sdk_histogram = meter_provider.get_meter("benchmark").create_histogram(
                "benchmark.duration", unit="s"
            )
            where = urllib.parse.urlsplit(base_url)
            span_attributes = {
                "http.request.method": "GET",
                "url.template": "/workflows/{id}",
                "server.address": where.hostname or "",
                "server.port": where.port,
            }
            record_attributes = {
                key: value for key, value in span_attributes.items() if key != "server.port"
            }
            record_attributes["http.response.status_code"] = 200

            async def sdk_floor_call() -> object:
                span = sdk_tracer.start_span(
                    "GET /workflows/{id}", kind=SpanKind.CLIENT, attributes=span_attributes
                )
                started = time.perf_counter()
                result = await raw_call()
                sdk_histogram.record(time.perf_counter() - started, record_attributes)
                span.set_attribute("http.response.status_code", 200)
                span.end()
                return result

            clients["Session + OTel API"] = api_only_call
            clients["Session + OTel SDK"] = traced_call
            clients["raw aiohttp + OTel SDK"] = sdk_floor_call
        try:
            walls: dict[str, list[float]] = {name: [] for name in clients}
            cpus: dict[str, list[float]] = {name: [] for name in clients}
            for call in clients.values():  # warm up: connections, caches
                await _burst(call, max(min(200, mode.overhead_calls), mode.overhead_calls // 10))
            names = list(clients)
            for rep in range(mode.overhead_reps):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for name in order:
                    calls = mode.overhead_calls // (4 if name == "httpx" else 1)  # it is slow
                    seconds, cpu_seconds = await _burst(clients[name], calls)
                    walls[name].append(seconds / calls * 1e6)
                    cpus[name].append(cpu_seconds / calls * 1e6)
        finally:
            for opened in sessions:
                await opened.close()
            await raw.close()
            await hx.aclose()
    wall: dict[str, float] = {name: median(values) for name, values in walls.items()}
    raw_wall, raw_cpu = walls["raw aiohttp"], cpus["raw aiohttp"]

    def vs_raw(figure: str, name: str, cpu_time: bool, limit: float | None) -> Row:
        values, base = (cpus[name], raw_cpu) if cpu_time else (walls[name], raw_wall)
        ratios = tuple(paired(values, base))
        goal = f"<= {limit:.2f}x raw aiohttp" if limit is not None else ""
        verdict = judge(ratios, limit) if limit is not None else None
        return Row(figure, median(values), "us", "raw aiohttp", median(base), goal,
                   None if verdict is None else verdict == "met",
                   note=f"{1e6 / median(values):,.0f} calls/s" if not cpu_time else "",
                   verdict=verdict, ratios=ratios)  # fmt: skip

    def vs_floor(figure: str, name: str, cpu_time: bool) -> Row:
        floor = "raw aiohttp + OTel SDK"
        values, base = (cpus[name], cpus[floor]) if cpu_time else (walls[name], walls[floor])
        ratios = tuple(paired(values, base))
        verdict = judge(ratios, 1.10)
        return Row(figure, median(values), "us", "SDK floor", median(base),
                   "<= 1.10x the SDK floor", verdict == "met", verdict=verdict,
                   ratios=ratios)  # fmt: skip

    faster = tuple(paired(walls["Session"], walls["httpx"]))
    section.rows += [
        vs_raw("Session.get_workflow, wall time per call", "Session", False, 1.10),
        vs_raw("Session.get_workflow, client CPU per call", "Session", True, 1.10),
        vs_raw("httpx.AsyncClient, wall time per call", "httpx", False, None),
        Row("Session vs httpx, wall time per call", wall["Session"], "us",
            "httpx", wall["httpx"], "faster than httpx", judge(faster, 1.0) == "met",
            verdict=judge(faster, 1.0), ratios=faster),
    ]  # fmt: skip
    if "Session + OTel SDK" in wall:
        section.rows += [
            vs_raw("Session + OTel API (no SDK), wall time per call", "Session + OTel API",
                   False, 1.10),
            vs_raw("Session + OTel SDK (spans + metrics), wall time per call",
                   "Session + OTel SDK", False, 1.25),
            vs_raw("Session + OTel SDK, client CPU per call", "Session + OTel SDK", True, 1.25),
            vs_raw("SDK floor: raw aiohttp + one SDK span + one histogram record, wall",
                   "raw aiohttp + OTel SDK", False, None),
            vs_floor("Session + OTel SDK vs the SDK floor, wall time per call",
                     "Session + OTel SDK", False),
            vs_floor("Session + OTel SDK vs the SDK floor, client CPU per call",
                     "Session + OTel SDK", True),
        ]  # fmt: skip
    section.notes.append(
        f"{mode.overhead_reps} interleaved repetitions x {mode.overhead_calls} calls per client;"
        " medians; ratios are the median of the paired per-repetition ratios, [spread] their"
        " min-max (IQR from 8 repetitions). The server is a separate process answering a"
        " fixed body."
    )
    return section


if TracerProvider is not None:

    class _Nowhere(SpanExporter):
        """Takes every finished span and keeps none: the SDK's own cost, not an exporter's."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None
