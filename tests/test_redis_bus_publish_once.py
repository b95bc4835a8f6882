"""RedisBus.publish_once: the claim-and-publish of an event as one server-side script, against a
real redis-server (atomic across workers, NOSCRIPT reloads, outages, terminal is final)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from eventually import eventually
from redis_server import MakeBus, RedisServer, bus_maker

import workflows_async as wa
from workflows_async._metrics import publish_outcome
from workflows_async.engine import WaitEngine
from workflows_async.events import REPLAY_WINDOW, WebhookEvent
from workflows_async.redis_bus import RedisBus
from workflows_async.statuses import StatusSet

NS = "once_ns"


def event(wid: str = "wf-1", status: str = "COMPLETED", event_id: str = "e-1") -> WebhookEvent:
    return WebhookEvent(workflow_id=wid, status=status, event_id=event_id, raw=b"{}")


async def never(workflow_id: str) -> wa.Workflow:
    raise AssertionError("no poll expected")


@pytest.fixture
async def make_bus(redis_server: RedisServer) -> AsyncIterator[MakeBus]:
    async with bus_maker(redis_server, NS) as make:
        yield make


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def once(bus: RedisBus, ev: WebhookEvent, *, terminal: bool = True) -> str:
    return await bus.publish_once(
        ev, terminal=terminal, mark=f"published:{ev.dedup_key}", mark_ttl=REPLAY_WINDOW
    )


async def test_published_once_then_a_duplicate_with_the_mark_kept_a_week(
    make_bus: MakeBus, raw: aioredis.Redis
) -> None:
    bus = make_bus()
    got: list[WebhookEvent] = []
    await bus.start(got.append)
    ev = event()
    assert await once(bus, ev) == "published"
    assert await once(bus, ev) == "duplicate"
    mark_ms = await raw.pttl(f"{NS}:claim:published:{ev.dedup_key}")
    assert REPLAY_WINDOW * 1000 - 60_000 < mark_ms <= REPLAY_WINDOW * 1000
    assert [e.status for e in await bus.last_terminal(["wf-1"])] == ["COMPLETED"]
    await eventually(lambda: got, "the event delivered")
    assert bus.published == 1


async def test_a_mark_set_by_the_claim_protocol_is_honoured(make_bus: MakeBus) -> None:
    """Workers of the previous version mark with ``claim``: same key, so a rolling upgrade
    never publishes an event twice."""
    bus = make_bus()
    await bus.start(lambda e: None)
    ev = event()
    assert await bus.claim(f"published:{ev.dedup_key}", REPLAY_WINDOW)
    assert await once(bus, ev) == "duplicate"
    assert bus.published == 0


async def test_an_event_nobody_hears_and_not_terminal_went_nowhere(make_bus: MakeBus) -> None:
    bus = make_bus()  # not started: nobody subscribes
    assert await once(bus, event(status="IN_PROGRESS"), terminal=False) == "unsent"
    # No mark was set: a retry, once someone listens, is published.
    await bus.start(lambda e: None)
    assert await once(bus, event(status="IN_PROGRESS"), terminal=False) == "published"


async def test_the_first_terminal_event_stays_on_redis(make_bus: MakeBus) -> None:
    bus = make_bus()
    waiting = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never)
    try:
        assert await waiting.publish(event("wf-1", "COMPLETED", "e-1"))
        assert await waiting.publish(event("wf-1", "FAILED", "e-2"))  # a later, other status
        assert await bus.publish(event("wf-1", "CANCELED", "e-3"), terminal=True)
        [remembered] = await bus.last_terminal(["wf-1"])
        assert remembered.status == "COMPLETED"
    finally:
        await waiting.close()


async def test_copies_on_three_workers_are_published_once_each(
    make_bus: MakeBus, raw: aioredis.Redis
) -> None:
    workers = [
        WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=make_bus(), poll=never)
        for _ in range(3)
    ]
    seen: list[bytes] = []
    listener = raw.pubsub()
    await listener.subscribe(f"{NS}:events")
    try:
        for worker in workers:
            await worker.start()
        events = [event(f"wf-{i}", "COMPLETED", f"e-{i}") for i in range(40)]
        calls = [w.publish(ev) for ev in events for w in workers for _ in range(4)]
        async with asyncio.timeout(30):
            answers = await asyncio.gather(*calls)
            assert answers == [True] * len(calls)  # each copy: published, or a duplicate of it
            while len(seen) < len(events):
                message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    seen.append(message["data"])
            await asyncio.sleep(0.2)  # a second copy would have arrived by now
            while (message := await listener.get_message(True, timeout=0.05)) is not None:
                seen.append(message["data"])
        assert len(seen) == len(events)
        assert sum(w.bus.published for w in workers) == len(events)  # type: ignore[attr-defined]
        for worker in workers:
            assert worker.registry.dispatched == len(events)
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        for worker in workers:
            await worker.close()


async def test_a_redis_that_forgot_the_script_gets_it_again(
    make_bus: MakeBus, raw: aioredis.Redis, redis_server: RedisServer
) -> None:
    bus = make_bus()
    await bus.start(lambda e: None)
    assert await once(bus, event("wf-1", event_id="e-1")) == "published"
    assert await once(bus, event("wf-2", event_id="e-2")) == "published"
    assert bus.script_loads == 1  # the first call: EVALSHA said NOSCRIPT, EVAL loaded it
    await raw.script_flush()
    assert await once(bus, event("wf-3", event_id="e-3")) == "published"
    assert bus.script_loads == 2
    redis_server.restart()  # an empty script cache, an empty store
    outcomes: list[str] = []

    async def sent() -> bool:  # the first call may meet the dropped connection
        outcomes.append(await once(bus, event("wf-4", event_id="e-4")))
        return outcomes[-1] != "unsent"

    await eventually(sent, "a publish that is not unsent", timeout=20, interval=0.05)
    assert outcomes[-1] == "published"
    assert bus.script_loads == 3


async def test_redis_down_is_unsent_and_handled_here(
    make_bus: MakeBus, redis_server: RedisServer
) -> None:
    bus = make_bus()
    waiting = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never)
    try:
        await waiting.start()
        task = asyncio.create_task(waiting.completion("wf-1", first_poll=3600))
        await eventually(lambda: "wf-1" in waiting.pending(), "the wait registered")
        redis_server.stop()
        async with asyncio.timeout(30):
            assert await once(bus, event("wf-9", event_id="e-9")) == "unsent"
            assert await waiting.publish(event("wf-1", "COMPLETED", "e-1")) is True  # needed here
            assert (await task).channel is wa.Channel.WEBHOOK
            assert await waiting.publish(event("wf-2", "COMPLETED", "e-2")) is False  # 503
            assert publish_outcome.get() == "not_published"
    finally:
        await waiting.close()


async def test_no_free_connection_never_fails_open(make_bus: MakeBus, raw: aioredis.Redis) -> None:
    bus = make_bus(max_connections=1, pool_timeout=0.05)
    await bus.start(lambda e: None)
    ev = event()
    await bus._slots.acquire()  # the bus's one command slot is busy
    try:
        assert await once(bus, ev) == "unsent"
    finally:
        bus._slots.release()
    assert bus.overloaded == 1
    assert await raw.exists(f"{NS}:claim:published:{ev.dedup_key}") == 0  # nothing marked
    assert await once(bus, ev) == "published"


async def test_the_publisher_delivers_at_once_and_skips_its_own_echo(
    make_bus: MakeBus, raw: aioredis.Redis
) -> None:
    bus, other = make_bus(), make_bus()
    mine: list[WebhookEvent] = []
    theirs: list[WebhookEvent] = []
    await bus.start(mine.append)
    await other.start(theirs.append)
    for i in range(5):
        assert await once(bus, event(f"wf-{i}", event_id=f"e-{i}")) == "published"
        assert len(mine) == i + 1  # delivered here before publish_once returned
    await eventually(lambda: len(theirs) >= 5, "the other bus got all five")
    await raw.publish(f"{NS}:events", b"marker")  # after every echo, on the same channel
    await eventually(lambda: bus.skipped > 0, "the marker skipped")
    assert [e.workflow_id for e in mine] == [f"wf-{i}" for i in range(5)]  # no echo delivered
    assert bus.delivered == 5 and not bus._echoes
