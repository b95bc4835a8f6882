"""RedisBus.publish_once on connections of the bus's own (``_redis_lanes.py``), against a real
redis-server: reused while sound, replaced when gone, dropped at the deadline, bounded by
``max_connections``, closed with the bus; a caller's client keeps giving every connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from eventually import eventually
from redis_server import MakeBus, RedisServer, bus_maker

from workflows_async import _redis_lanes, redis_bus
from workflows_async._redis_lanes import Lanes
from workflows_async.events import REPLAY_WINDOW, WebhookEvent
from workflows_async.redis_bus import RedisBus

NS = "lanes_ns"


def event(i: int) -> WebhookEvent:
    return WebhookEvent(workflow_id=f"wf-{i}", status="COMPLETED", event_id=f"e-{i}", raw=b"{}")


async def once(bus: RedisBus, ev: WebhookEvent) -> str:
    return await bus.publish_once(
        ev, terminal=True, mark=f"published:{ev.dedup_key}", mark_ttl=REPLAY_WINDOW
    )


def lanes(bus: RedisBus) -> Lanes:
    assert bus._lanes is not None
    return bus._lanes


@pytest.fixture
async def make_bus(redis_server: RedisServer) -> AsyncIterator[MakeBus]:
    async with bus_maker(redis_server, NS) as make:
        yield make


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def clients(raw: aioredis.Redis) -> int:
    """Connections Redis has open, not counting ``raw``'s own."""
    return len(await raw.client_list()) - 1


@pytest.fixture(params=["streams", "redis-py methods"])
def speaking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Directly on redis-py's streams, or through its methods (a version without the streams)."""
    if request.param != "streams":
        monkeypatch.setattr(_redis_lanes, "streams", lambda connection: None)
    kind: str = request.param
    return kind


async def test_one_connection_carries_publish_after_publish_and_an_error_reply(
    make_bus: MakeBus, raw: aioredis.Redis, speaking: str
) -> None:
    bus = make_bus()
    got: list[WebhookEvent] = []
    await bus.start(got.append)
    for i in range(20):
        assert await once(bus, event(i)) == "published"
    await raw.script_flush()  # NOSCRIPT: an error reply, then EVAL on the same connection
    assert await once(bus, event(20)) == "published"
    assert (lanes(bus).opened, bus.script_loads) == (1, 2)
    await eventually(lambda: not bus._echoes, "every echo read (and skipped)")
    assert [e.workflow_id for e in got] == [f"wf-{i}" for i in range(21)]
    assert await once(bus, event(20)) == "duplicate"
    assert await raw.exists(*(f"{NS}:terminal:wf-{i}" for i in range(21))) == 21


async def test_concurrent_publishes_open_at_most_max_connections(
    make_bus: MakeBus, raw: aioredis.Redis
) -> None:
    bus = make_bus(max_connections=4)
    await bus.start(lambda e: None)
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*(once(bus, event(i)) for i in range(300)))
    assert outcomes == ["published"] * 300
    assert 1 <= lanes(bus).opened <= 4
    assert await clients(raw) <= 4 + 1  # the lanes and the subscription (nothing else used)
    assert bus.overloaded == 0


async def test_a_connection_gone_with_a_restart_is_replaced_at_once(
    make_bus: MakeBus, redis_server: RedisServer, speaking: str
) -> None:
    bus = make_bus()
    assert await once(bus, event(1)) == "published"
    redis_server.restart()  # the idle connection is gone, and so is the script cache
    assert await once(bus, event(2)) == "published"  # the first try after the restart
    assert lanes(bus).opened == 2
    assert bus.script_loads == 2


async def test_redis_down_is_unsent_and_no_connection_is_kept(
    make_bus: MakeBus, redis_server: RedisServer
) -> None:
    bus = make_bus()
    assert await once(bus, event(1)) == "published"
    redis_server.stop()
    async with asyncio.timeout(30):
        assert await once(bus, event(2)) == "unsent"
        assert await once(bus, event(3)) == "unsent"
    assert lanes(bus)._idle == []
    redis_server.start()
    assert await once(bus, event(4)) == "published"


async def test_a_silent_redis_is_given_up_at_the_deadline_and_the_connection_dropped(
    make_bus: MakeBus,
    raw: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    speaking: str,
) -> None:
    monkeypatch.setattr(redis_bus, "_SOCKET_TIMEOUT", 0.3)
    bus = make_bus()
    assert await once(bus, event(1)) == "published"
    await raw.client_pause(20_000, all=False)  # WRITE mode: scripts wait, CLIENT UNPAUSE not
    try:
        async with asyncio.timeout(15):
            assert await once(bus, event(2)) == "unsent"
    finally:
        await raw.client_unpause()
    assert "publish to redis://127.0.0.1" in caplog.text
    assert lanes(bus)._idle == []  # a reply may still come on it: never reused
    assert await once(bus, event(3)) == "published"
    assert lanes(bus).opened == 2


async def test_close_disconnects_the_connections_of_the_bus(
    make_bus: MakeBus, raw: aioredis.Redis
) -> None:
    before = await clients(raw)
    bus = make_bus(max_connections=3)
    await bus.start(lambda e: None)
    await asyncio.gather(*(once(bus, event(i)) for i in range(30)))
    assert await clients(raw) > before
    await bus.close()
    await eventually(lambda: _count_is(raw, before), "the bus's connections closed")
    assert await once(bus, event(99)) == "unsent"


async def _count_is(raw: aioredis.Redis, count: int) -> bool:
    return await clients(raw) == count


async def test_a_callers_client_gives_every_connection_and_its_limit_holds(
    redis_server: RedisServer, make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="workflows_async.redis_bus")
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_server.url, max_connections=2, timeout=0.1
    )
    client = aioredis.Redis.from_pool(pool)
    try:
        bus = make_bus(client, pool_timeout=0.3)
        assert bus._lanes is None
        assert await once(bus, event(1)) == "published"
        held = [await pool.get_connection() for _ in range(2)]  # type: ignore[no-untyped-call]
        try:
            assert await once(bus, event(2)) == "unsent"  # fails closed: Redis was not asked
            assert bus.overloaded == 1
        finally:
            for connection in held:
                await pool.release(connection)
        assert await once(bus, event(2)) == "published"
    finally:
        await client.aclose()
