"""RedisBus against a real redis-server (no mocks): fan-out, memory, claims, outages, cleanup."""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from eventually import eventually
from redis_server import MakeBus, RedisServer, bus_maker

from workflows_async.bus import Bus
from workflows_async.errors import ConfigurationError
from workflows_async.events import WebhookEvent
from workflows_async.redis_bus import RedisBus, mask_url

NS = "test_ns"
# Not valid UTF-8, with CRLFs: the raw body must survive the trip byte for byte.
RAW = b'{"workflowId": "wf-1",\r\n "status": "COMPLETED", "x": "\xff\xfe"}'


def event(workflow_id: str = "wf-1", status: str = "COMPLETED", raw: bytes = RAW) -> WebhookEvent:
    return WebhookEvent(workflow_id=workflow_id, status=status, event_id="e-1", raw=raw)


@pytest.fixture
async def make_bus(redis_server: RedisServer) -> AsyncIterator[MakeBus]:
    async with bus_maker(redis_server, NS) as make:
        yield make


async def test_event_reaches_every_bus_with_raw_bytes_intact(make_bus: MakeBus) -> None:
    a, b = make_bus(), make_bus()
    as_protocol: Bus = a  # mypy checks that RedisBus satisfies the Bus protocol
    got_a: list[WebhookEvent] = []
    got_b: list[WebhookEvent] = []
    await as_protocol.start(got_a.append)
    await b.start(got_b.append)
    assert a.healthy
    assert b.healthy

    assert await a.publish(event(status="RUNNING"), terminal=False) is True

    await eventually(lambda: len(got_a) == 1 and len(got_b) == 1, "both buses delivered")
    for got in (got_a[0], got_b[0]):
        assert got == event(status="RUNNING")
        assert got.raw == RAW
    assert (a.published, a.delivered, b.delivered) == (1, 1, 1)


async def test_late_waiter_finds_terminal_event_until_ttl(make_bus: MakeBus) -> None:
    a = make_bus(terminal_ttl=0.3)
    await a.start(lambda _: None)
    assert await a.publish(event("wf-1"), terminal=True) is True
    assert await a.publish(event("wf-2", status="RUNNING"), terminal=False) is True

    late = make_bus()  # never started: a fresh process that only looks things up
    found = await late.last_terminal(["wf-1", "wf-2", "wf-unknown", "wf-1"])
    assert found == [event("wf-1")]
    assert found[0].raw == RAW
    assert await late.last_terminal([]) == []

    async def expired() -> bool:
        return not await late.last_terminal(["wf-1"])

    await eventually(expired, "the terminal event to expire", timeout=3.0, interval=0.05)


async def test_last_terminal_many_ids_in_chunks(make_bus: MakeBus) -> None:
    a = make_bus()
    for wid in ("wf-a", "wf-b"):
        assert await a.publish(event(wid), terminal=True)
    ids = [f"wf-{n}" for n in range(2500)] + ["wf-b", "wf-a"]
    found = await make_bus().last_terminal(ids)
    assert sorted(e.workflow_id for e in found) == ["wf-a", "wf-b"]


async def test_publish_reports_whether_the_event_went_anywhere(make_bus: MakeBus) -> None:
    lonely = make_bus()  # nobody subscribed yet
    assert await lonely.publish(event(status="RUNNING"), terminal=False) is False
    assert await lonely.publish(event(), terminal=True) is True  # remembered


async def test_claim_is_true_exactly_once_across_buses(make_bus: MakeBus) -> None:
    a, b = make_bus(), make_bus()
    results = await asyncio.gather(*(bus.claim("dispatch:wf-1", 5.0) for bus in [a, b] * 10))
    assert results.count(True) == 1
    assert await a.claim("dispatch:wf-2", 0.05) is True
    await asyncio.sleep(0.1)
    assert await b.claim("dispatch:wf-2", 5.0) is True  # the first claim expired


async def test_outage_then_reconnect_by_itself(
    redis_server: RedisServer,
    make_bus: MakeBus,
) -> None:
    calls: list[bool] = []

    async def on_reconnect() -> None:
        calls.append(a.healthy)

    a = make_bus(on_reconnect=on_reconnect)
    b = make_bus()
    got_a: list[WebhookEvent] = []
    got_b: list[WebhookEvent] = []
    await a.start(got_a.append)
    await b.start(got_b.append)

    redis_server.stop()
    await eventually(lambda: not a.healthy and not b.healthy, "buses notice the outage")
    assert await a.publish(event(), terminal=True) is False
    assert await a.last_terminal(["wf-1"]) == []
    assert await a.claim("dispatch:wf-1", 5.0) is True  # fails open
    assert a.reconnects == 0

    redis_server.start()  # same port
    await eventually(lambda: a.healthy and b.healthy, "buses re-subscribe")
    await eventually(lambda: calls == [True], "on_reconnect ran once, while healthy")
    assert a.reconnects == 1
    assert b.reconnects == 1

    assert await b.publish(event("wf-9"), terminal=True) is True
    await eventually(lambda: len(got_a) == 1 and len(got_b) == 1, "delivery resumes")
    assert got_a[0].workflow_id == "wf-9"
    assert [e.workflow_id for e in await a.last_terminal(["wf-9"])] == ["wf-9"]


async def test_start_while_redis_is_down(
    redis_server: RedisServer,
    make_bus: MakeBus,
) -> None:
    calls: list[int] = []

    async def on_reconnect() -> None:
        calls.append(1)

    redis_server.stop()
    a = make_bus(on_reconnect=on_reconnect)
    got: list[WebhookEvent] = []
    await a.start(got.append)  # returns after the first (failed) attempt
    assert not a.healthy

    redis_server.start()
    await eventually(lambda: a.healthy and calls == [1], "bus subscribes once Redis is up")
    assert await a.publish(event(), terminal=False) is True
    await eventually(lambda: len(got) == 1, "delivery")


async def test_close_leaves_no_tasks_and_no_warnings(redis_server: RedisServer) -> None:
    before = asyncio.all_tasks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = RedisBus(redis_server.url, namespace=NS, ping_interval=0.5)
        b = RedisBus(redis_server.url, namespace=NS, ping_interval=0.5)
        got: list[WebhookEvent] = []
        await a.start(got.append)
        await b.start(got.append)
        assert asyncio.all_tasks() - before  # the readers run
        assert await a.publish(event(), terminal=True)
        await eventually(lambda: len(got) == 2, "delivery")
        await a.close()
        await b.close()
        await a.close()  # idempotent
        assert not a.healthy
        assert asyncio.all_tasks() == before
        del a, b
        gc.collect()
    assert [str(w.message) for w in caught] == []


async def test_close_during_an_outage_is_prompt(
    redis_server: RedisServer,
) -> None:
    before = asyncio.all_tasks()
    a = RedisBus(redis_server.url, namespace=NS, reconnect_max_delay=5.0, ping_interval=0.5)
    await a.start(lambda _: None)
    redis_server.stop()
    await eventually(lambda: not a.healthy, "outage noticed")
    await asyncio.wait_for(a.close(), 2.0)
    assert asyncio.all_tasks() == before
    assert await a.publish(event(), terminal=False) is False
    with pytest.raises(RuntimeError, match="closed"):
        await a.start(lambda _: None)


async def test_garbage_and_failing_deliver_do_not_stop_the_reader(
    redis_server: RedisServer,
    make_bus: MakeBus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[WebhookEvent] = []

    def deliver(ev: WebhookEvent) -> None:
        if ev.workflow_id == "boom":
            raise ValueError("deliver blew up")
        got.append(ev)

    a = make_bus()
    await a.start(deliver)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await raw.publish(f"{NS}:events", b"\xff\x00 not json")
        await raw.publish(f"{NS}:events", b'{"workflowId": "missing fields"}')
        await raw.set(f"{NS}:terminal:wf-bad", b"garbage")
    finally:
        await raw.aclose()
    await a.publish(event("boom"), terminal=False)
    await a.publish(event("wf-ok"), terminal=False)

    await eventually(lambda: len(got) == 1, "the good event after the bad ones")
    assert got[0].workflow_id == "wf-ok"
    assert a.skipped == 2
    assert a.healthy
    assert "deliver failed for workflow boom" in caplog.text
    assert await a.last_terminal(["wf-bad"]) == []


async def test_external_client_is_left_open(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        a = RedisBus(client, namespace=NS, ping_interval=0.5)
        got: list[WebhookEvent] = []
        await a.start(got.append)
        assert await a.publish(event(), terminal=True)
        await eventually(lambda: len(got) == 1, "delivery through a decode_responses client")
        assert got[0].raw == RAW
        assert [e.raw for e in await a.last_terminal(["wf-1"])] == [RAW]
        assert "client=<external>" in repr(a)
        await a.close()
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_password_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = RedisServer().port  # a free port with nothing listening
    a = RedisBus(f"redis://user:s3cret-pw@127.0.0.1:{port}/0", namespace=NS)
    try:
        assert "s3cret-pw" not in repr(a)
        assert "***" in repr(a)
        assert await a.publish(event(), terminal=False) is False
        assert await a.claim("k", 1.0) is True
        assert await a.last_terminal(["wf-1"]) == []
    finally:
        await a.close()
    assert caplog.records
    assert "s3cret-pw" not in caplog.text


def test_mask_url() -> None:
    assert mask_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert mask_url("rediss://me:pw@host/1") == "rediss://me:***@host/1"
    assert mask_url("redis://host:6379") == "redis://host:6379"
    assert mask_url("unix:///tmp/r.sock?db=0&password=pw") == "unix:///tmp/r.sock?db=0&password=***"


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("redis://127.0.0.1:1/0",), {"namespace": ""}),
        (("redis://127.0.0.1:1/0",), {"terminal_ttl": 0}),
        (("redis://127.0.0.1:1/0",), {"reconnect_max_delay": -1.0}),
        (("ftp://127.0.0.1/0",), {}),
        ((42,), {}),
    ],
)
def test_bad_settings(args: tuple[Any, ...], options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisBus(*args, **options)


def test_without_the_redis_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'workflows-async\[redis\]'"):
        RedisBus("redis://127.0.0.1:1/0")


def test_import_does_not_import_redis() -> None:
    code = (
        "import sys, workflows_async, workflows_async.redis_bus;"
        "assert 'redis' not in sys.modules, 'redis imported eagerly'"
    )
    done = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


async def test_quick_restart_is_noticed(
    redis_server: RedisServer,
    make_bus: MakeBus,
) -> None:
    calls: list[int] = []

    async def on_reconnect() -> None:
        calls.append(1)

    a = make_bus(on_reconnect=on_reconnect)
    got: list[WebhookEvent] = []
    await a.start(got.append)
    redis_server.restart()  # blocks the loop: the bus only sees a dropped connection after it
    await eventually(lambda: a.healthy and len(calls) >= 1, "the gap is reported")
    assert a.reconnects >= 1
    assert await a.publish(event(), terminal=False) is True
    await eventually(lambda: len(got) == 1, "delivery after the restart")


async def test_a_burst_of_lookups_is_merged_and_answers_each_caller(make_bus: MakeBus) -> None:
    a = make_bus()
    for i in range(0, 2000, 2):  # every other workflow has ended
        await a.publish(event(workflow_id=f"wf-{i}", status="COMPLETED"), terminal=True)
    reader = make_bus()
    answers = await asyncio.gather(*(reader.last_terminal([f"wf-{i}"]) for i in range(2000)))
    assert all(len(found) == (1 - i % 2) for i, found in enumerate(answers))
    assert all(found[0].workflow_id == f"wf-{i}" for i, found in enumerate(answers) if found)


def test_a_picked_port_taken_before_redis_binds_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bind-release-reuse race of a picked port: the first start moves to another port
    rather than fail, and never takes the process that holds the port for its own server."""
    import socket

    from workflows_async.testing import _redis_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()  # answers connections, but is no redis-server of ours
        busy = taken.getsockname()[1]
        ports = iter([busy])
        real = _redis_server._free_port
        monkeypatch.setattr(_redis_server, "_free_port", lambda: next(ports, None) or real())
        server = RedisServer()
        assert server.port == busy
        try:
            server.start()
            assert server.running and server.port != busy
            moved = server.port
            server.restart()
            assert server.port == moved  # once served on, a port stays
        finally:
            server.cleanup()


def test_a_given_port_that_is_taken_is_an_error(redis_server: RedisServer) -> None:
    """A port the caller chose is never replaced: starting on a busy one fails clearly."""
    from workflows_async.testing import RedisServerError

    other = RedisServer(port=redis_server.port, start_timeout=5)
    with pytest.raises(RedisServerError, match="already in use"):
        other.start()
    other.cleanup()
    assert redis_server.running
