"""A webhook-receiving worker with its own OpenTelemetry SDK, run as a process by
``tests/test_otel_processes.py``.

It serves the Session's webhook sub-app at ``http://127.0.0.1:PORT/webhooks/`` on a RedisBus
(PORT: one the system picks, printed once it listens as the line ``ready PORT``), records spans
in memory, and on SIGTERM writes them as JSON lines to ``--spans`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import workflows_async as wa
from workflows_async.testing import serve


async def main(args: argparse.Namespace) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    session = wa.Session(
        args.api,
        wa.KeySecretAuth(args.key, args.secret),
        allow_insecure_http=True,
        bus=wa.RedisBus(args.redis, namespace=args.namespace),
        tracer_provider=provider,
    )
    async with session:
        app = web.Application()
        app.add_subapp("/webhooks", session.webhook_app())
        async with serve(app) as served:
            print(f"ready {served.port}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
    lines = []
    for span in exporter.get_finished_spans():
        lines.append(
            json.dumps(
                {
                    "name": span.name,
                    "trace_id": span.context.trace_id,
                    "span_id": span.context.span_id,
                    "attributes": dict(span.attributes or {}),
                }
            )
        )
    Path(args.spans).write_text("\n".join(lines) + "\n")  # noqa: ASYNC240 - at exit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--spans", required=True)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
