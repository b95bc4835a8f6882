"""Benchmark 3: waiting at scale. Memory and tasks per pending wait (``_memory.py``, in fresh
helper processes), then webhook-to-waiter latency at a steady webhook rate (``_latency.py``)
with the in-process bus and with ``RedisBus`` on a throw-away redis-server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from _ingest import signed_events, webhook_request
from _latency import Scenario, measure
from _proc import Child
from _report import LATENCY_RATE, Mode, Row, Section, percentile

import workflows_async as wa
from workflows_async.testing import (
    RedisServer,
    RedisServerError,
    generate_signing_key,
    public_key_pem,
)

__all__ = ["run"]

Publish = Callable[[wa.WebhookEvent], Awaitable[object]]


class _Count(logging.Handler):
    """Counts the warnings of ``logger`` that contain ``text``, and keeps them off the screen."""

    def __init__(self, logger: str, text: str) -> None:
        super().__init__(logging.WARNING)
        self.logger, self.text, self.count = logging.getLogger(logger), text, 0
        self._saved = (self.logger.level, self.logger.propagate)

    def emit(self, record: logging.LogRecord) -> None:
        self.count += self.text in record.getMessage()

    def __enter__(self) -> _Count:
        self.logger.addHandler(self)
        self.logger.setLevel(logging.WARNING)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._saved[0])
        self.logger.propagate = self._saved[1]


async def _memory_rows(section: Section, n: int) -> None:
    probes = {}
    for kind in ("bare", "library", "wait"):
        async with await Child.start("memory", {"kind": kind, "n": n}) as child:
            probes[kind] = child.info
    lib, bare, pub = probes["library"], probes["bare"], probes["wait"]
    ratio = pub["rss_per_wait"] / bare["rss_per_wait"]
    register = pub["register_us"] / bare["register_us"]
    section.rows += [
        Row(f"memory per pending session.wait(), {n:,} waits (RSS)", pub["rss_per_wait"], "B",
            "bare future + task", bare["rss_per_wait"], "<= 1.2x", ratio <= 1.2,
            note=f"traced {pub['traced_per_wait']:,.0f} B vs {bare['traced_per_wait']:,.0f} B;"
            f" library's own {pub['library_per_wait']:,.0f} B"),
        Row(f"  registering a session.wait(), {n:,} waits", pub["register_us"], "us",
            "bare future + task", bare["register_us"], "<= 2x", register <= 2.0),
        Row(f"memory per pending completion(), {n:,} waits (RSS)", lib["rss_per_wait"], "B",
            "bare future + task", bare["rss_per_wait"],
            note=f"traced {lib['traced_per_wait']:,.0f} B vs {bare['traced_per_wait']:,.0f} B;"
            f" registering took {lib['register_us']:.1f} us per wait"),
        Row(f"  allocated by workflows_async itself, {n:,} waits", lib["library_per_wait"], "B",
            note="tracemalloc, by the file that allocated"),
        Row(f"library asyncio tasks, {n:,} pending waits", pub["tasks_busy"], "",
            "with 0 waits", pub["tasks_idle"], "constant", pub["tasks_busy"] == pub["tasks_idle"],
            note=f"entries left after every wait was cancelled: {pub['leftover']}"
            f" (completion(): {lib['leftover']})"),
    ]  # fmt: skip


def _latency_rows(
    section: Section, label: str, values: list[float], base_name: str, base: list[float]
) -> None:
    for share, name in ((0.5, "p50"), (0.99, "p99")):
        section.rows.append(
            Row(f"wake-up {name}, {label}", percentile(values, share) * 1e6, "us",
                base_name, percentile(base, share) * 1e6)
        )  # fmt: skip


async def run(mode: Mode) -> Section:
    section = Section(3, "waiting at scale: memory, tasks, webhook-to-waiter latency")
    for n in mode.waiters:
        await _memory_rows(section, n)

    key, kid = generate_signing_key(), str(uuid.uuid4())
    pending = [str(uuid.uuid4()) for _ in range(mode.latency_pending)]
    events = signed_events(mode.latency_events, kid, key, pending[: mode.latency_events])
    requests = [webhook_request("127.0.0.1", "/hook/", body, sig) for _, body, sig in events]
    options: dict[str, object] = {"webhook_keys": {kid: public_key_pem(key)}}

    async def latency(
        kind: str, path: str, publish: Publish | None = None, **extra: object
    ) -> tuple[list[float], Scenario]:
        scenario = Scenario(kind, path, events, pending)
        got = await measure(scenario, LATENCY_RATE, {**options, **extra}, requests, publish)
        return got, scenario

    bare_direct, _ = await latency("bare", "direct")
    lib_direct, lib_sc = await latency("library", "direct")
    bare_http, _ = await latency("bare", "http")
    lib_http, _ = await latency("library", "http")
    _latency_rows(section, "publish(), in-process bus", lib_direct,
                  "bare future", bare_direct)  # fmt: skip
    _latency_rows(section, "HTTP webhook, in-process bus", lib_http,
                  "bare aiohttp handler", bare_http)  # fmt: skip

    try:
        server = RedisServer(extra_args=("--maxclients", "20000"))
        server.start()
    except RedisServerError:
        section.notes.append("no redis-server found: the RedisBus figures were skipped")
        return section
    try:
        with _Count("workflows_async.redis_bus", "last_terminal failed") as failures:
            bus = wa.RedisBus(server.url, namespace="b1")
            redis_direct, sc = await latency("library", "direct", bus=bus)
            bus = wa.RedisBus(server.url, namespace="b2")
            redis_http, _ = await latency("library", "http", bus=bus)
            # Another worker takes the webhooks: events reach the waiters through the
            # subscription (its reader), not through the publisher's own delivery.
            async with wa.Session(
                "http://127.0.0.1:9", wa.TokenAuth("unused"), allow_insecure_http=True,
                bus=wa.RedisBus(server.url, namespace="b3"),
            ) as other:  # fmt: skip
                bus = wa.RedisBus(server.url, namespace="b3")
                redis_remote, _ = await latency(
                    "library", "direct", other._waiting.publish, bus=bus
                )
    finally:
        server.cleanup()
    n = mode.latency_pending
    section.rows += [
        Row(f"RedisBus: registering {n:,} waits at once, per wait", sc.register_seconds / n * 1e6,
            "us", "in-process bus", lib_sc.register_seconds / n * 1e6,
            note="each registration looks up the remembered terminal event in Redis"),
        Row(f"RedisBus: failed remembered-event lookups, {n:,} waits x 2", failures.count, "",
            goal="0", met=failures.count == 0),
    ]  # fmt: skip
    _latency_rows(section, "publish(), RedisBus", redis_direct,
                  "in-process bus", lib_direct)  # fmt: skip
    _latency_rows(section, "HTTP webhook, RedisBus", redis_http,
                  "in-process bus", lib_http)  # fmt: skip
    _latency_rows(section, "publish() on another worker, RedisBus", redis_remote,
                  "in-process bus", lib_direct)  # fmt: skip
    section.rows.append(
        Row(f"library asyncio tasks, RedisBus, {n:,} pending waits",
            sc.tasks_busy, "", "with 0 waits", sc.tasks_idle, "constant",
            sc.tasks_busy == sc.tasks_idle)
    )  # fmt: skip
    section.notes.append(
        f"wake-up: {mode.latency_events:,} of {mode.latency_pending:,} pending waits resolved at"
        f" {LATENCY_RATE:,.0f} webhooks/s, timed from the hand-over to publish() (or the write of"
        " the signed webhook to the socket) until the waiting caller runs again."
    )
    return section
