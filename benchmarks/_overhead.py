"""Benchmark 1: what one ``Session.get_workflow`` call costs next to raw aiohttp and httpx.

The server is a helper process answering every request with the same workflow JSON at almost
no cost, so the figures are the clients' own. Each client sends the same headers and decodes
the body (``json.loads`` for the raw clients, the msgspec model for the Session). Repetitions
run the clients interleaved, in a rotating order; the medians are reported.

Telemetry: the plain ``Session`` runs with the library's loggers at WARNING and OpenTelemetry
off (what a user without the ``otel`` extra gets); "Session + OTel API" has the extra installed
but no SDK configured (spans are non-recording); "Session + OTel SDK" records every span through
the SDK (a span processor that exports to nowhere) and every metric into an in-memory reader.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import httpx
from _proc import Child
from _report import CONCURRENCY, Mode, Row, Section, median

import workflows_async as wa

__all__ = ["run"]

try:  # the SDK comes with the dev extra; without it the traced rows are left out
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
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

            clients["Session + OTel API"] = api_only_call
            clients["Session + OTel SDK"] = traced_call
        try:
            walls: dict[str, list[float]] = {name: [] for name in clients}
            cpus: dict[str, list[float]] = {name: [] for name in clients}
            for call in clients.values():  # warm up: connections, caches
                await _burst(call, max(200, mode.overhead_calls // 10))
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
    cpu: dict[str, float] = {name: median(values) for name, values in cpus.items()}
    goal = "<= 1.10x raw aiohttp"
    section.rows += [
        Row("Session.get_workflow, wall time per call", wall["Session"], "us",
            "raw aiohttp", wall["raw aiohttp"], goal, wall["Session"] <= 1.10 * wall["raw aiohttp"],
            note=f"{1e6 / wall['Session']:,.0f} calls/s"),
        Row("Session.get_workflow, client CPU per call", cpu["Session"], "us",
            "raw aiohttp", cpu["raw aiohttp"], goal, cpu["Session"] <= 1.10 * cpu["raw aiohttp"]),
        Row("httpx.AsyncClient, wall time per call", wall["httpx"], "us",
            "raw aiohttp", wall["raw aiohttp"]),
        Row("Session vs httpx, wall time per call", wall["Session"], "us",
            "httpx", wall["httpx"], "faster than httpx", wall["Session"] < wall["httpx"]),
    ]  # fmt: skip
    if "Session + OTel SDK" in wall:
        traced_goal = "<= 1.25x raw aiohttp"
        api, sdk = wall["Session + OTel API"], wall["Session + OTel SDK"]
        section.rows += [
            Row("Session + OTel API (no SDK), wall time per call", api, "us",
                "raw aiohttp", wall["raw aiohttp"], goal, api <= 1.10 * wall["raw aiohttp"]),
            Row("Session + OTel SDK (spans + metrics), wall time per call", sdk, "us",
                "raw aiohttp", wall["raw aiohttp"], traced_goal,
                sdk <= 1.25 * wall["raw aiohttp"]),
            Row("Session + OTel SDK, client CPU per call", cpu["Session + OTel SDK"], "us",
                "raw aiohttp", cpu["raw aiohttp"], traced_goal,
                cpu["Session + OTel SDK"] <= 1.25 * cpu["raw aiohttp"]),
        ]  # fmt: skip
    section.notes.append(
        f"{mode.overhead_reps} interleaved repetitions x {mode.overhead_calls} calls per client;"
        " medians. The server is a separate process answering a fixed body."
    )
    return section


if TracerProvider is not None:

    class _Nowhere(SpanExporter):
        """Takes every finished span and keeps none: the SDK's own cost, not an exporter's."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None
