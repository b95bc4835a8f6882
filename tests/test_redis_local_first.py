"""A terminal webhook received by a process whose own waiter waits for it wakes that waiter before
RedisBus's round trip (issue 16), then goes to the other processes as before; this process gets
it once (no second delivery from the reply or the echo: hooks and counters once), and every
answer to the webhook stays what it was (published, duplicate, Redis down)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from eventually import eventually
from redis_server import MakeBus, RedisServer, bus_maker

import workflows_async as wa
from workflows_async._metrics import publish_outcome
from workflows_async.engine import WaitEngine
from workflows_async.events import WebhookEvent
from workflows_async.redis_bus import RedisBus
from workflows_async.statuses import StatusSet

NS = "local_first_ns"


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


class Gate:
    """Holds every publish_once script of ``bus`` until opened (the round trip in flight)."""

    def __init__(self, bus: RedisBus) -> None:
        self.reached, self.opened = asyncio.Event(), asyncio.Event()
        script = bus._script

        async def held(sha: bytes | None, args: tuple[bytes, ...]) -> Any:
            self.reached.set()
            await self.opened.wait()
            return await script(sha, args)

        bus._script = held  # type: ignore[method-assign]


def engine(bus: RedisBus, hooked: list[str]) -> WaitEngine:
    waiting = WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never)
    waiting.hooks.add(lambda ev: hooked.append(ev.workflow_id), name="count")
    return waiting


async def settled(bus: RedisBus, raw: aioredis.Redis) -> None:
    """Every message published so far has reached ``bus``'s subscription (a marker after them,
    on the same channel, was read)."""
    skipped = bus.skipped
    await raw.publish(f"{NS}:events", b"marker")
    await eventually(lambda: bus.skipped > skipped, "the marker read")


async def test_the_local_waiter_wakes_before_the_round_trip_and_once(
    make_bus: MakeBus, raw: aioredis.Redis
) -> None:
    bus, other = make_bus(), make_bus()
    hooked: list[str] = []
    waiting = engine(bus, hooked)
    theirs: list[WebhookEvent] = []
    try:
        await waiting.start()
        await other.start(theirs.append)
        gate = Gate(bus)
        future = waiting.enter("wf-1", first_poll=3600)
        publishing = asyncio.create_task(waiting.publish(event()))
        await gate.reached.wait()  # the script is on its way; Redis has not run it
        assert future.done()  # old code: resolved only once the reply comes
        assert future.result().channel is wa.Channel.WEBHOOK
        assert not publishing.done()
        gate.opened.set()
        assert await publishing is True
        await eventually(lambda: len(theirs) == 1, "the other process got it")
        await settled(bus, raw)  # the echo came, and was skipped
        await waiting.hooks.drain()
        assert hooked == ["wf-1"]
        assert (waiting.registry.dispatched, waiting.registry.duplicates) == (1, 0)
        assert waiting.recorder.webhooks_delivered == 1
        assert bus.delivered == 1 and not bus._echoes  # counted once, as before
        assert await raw.exists(f"{NS}:terminal:wf-1") == 1
    finally:
        waiting.leave("wf-1", future)
        await waiting.close()


async def test_a_waiter_that_comes_during_the_round_trip_is_woken_too(
    make_bus: MakeBus, raw: aioredis.Redis
) -> None:
    bus = make_bus()
    waiting = engine(bus, [])
    try:
        await waiting.start()
        gate = Gate(bus)
        first = waiting.enter("wf-1", first_poll=3600)
        publishing = asyncio.create_task(waiting.publish(event()))
        await gate.reached.wait()
        assert first.done()
        waiting.leave("wf-1", first)
        late = waiting.enter("wf-1", first_poll=3600)
        # Its lookup found nothing (Redis has not run the script): it would wait for a poll.
        await eventually(lambda: len(waiting.scheduler) == 1, "the late waiter's poll entry")
        assert not late.done()
        gate.opened.set()
        assert await publishing is True
        assert late.done() and late.result().event == event()
        assert len(waiting.scheduler) == 0
        waiting.leave("wf-1", late)
    finally:
        await waiting.close()


async def test_a_copy_published_by_another_worker_fires_no_hook_twice(
    make_bus: MakeBus, raw: aioredis.Redis
) -> None:
    bus, other = make_bus(), make_bus()
    hooked: list[str] = []
    waiting = engine(bus, hooked)
    try:
        await waiting.start()
        await other.start(lambda ev: None)
        first = waiting.enter("wf-1", first_poll=3600)
        # Another worker received the webhook first: this process gets it by the subscription.
        assert await other.publish_once(
            event(), terminal=True, mark="published:id:e-1", mark_ttl=60.0
        ) == "published"  # fmt: skip
        await eventually(first.done, "the waiter woken through the subscription")
        waiting.leave("wf-1", first)
        second = waiting.enter("wf-1", first_poll=3600)  # another wait of the same workflow
        assert await waiting.publish(event()) is True  # the platform's retry, received here
        assert publish_outcome.get() == "duplicate"
        async with asyncio.timeout(10):  # found in Redis, where the other worker kept it
            assert (await second).event == event()
        waiting.leave("wf-1", second)
        await settled(bus, raw)
        await waiting.hooks.drain()
        assert hooked == ["wf-1"]
        assert waiting.recorder.webhooks_delivered == 1
    finally:
        await waiting.close()


async def test_a_copy_another_worker_published_at_the_same_moment_is_skipped(
    make_bus: MakeBus,
) -> None:
    bus, other = make_bus(), make_bus()
    hooked: list[str] = []
    waiting = engine(bus, hooked)
    try:
        await waiting.start()
        await other.start(lambda ev: None)
        held: list[object] = []
        bus._reader._on_message = held.append  # what the subscription reads waits here
        future = waiting.enter("wf-1", first_poll=3600)
        await eventually(lambda: len(waiting.scheduler) == 1, "its lookup done: it waits")
        # The same webhook reached another worker too, which published it first ...
        assert await other.publish_once(
            event(), terminal=True, mark="published:id:e-1", mark_ttl=60.0
        ) == "published"  # fmt: skip
        await eventually(lambda: len(held) == 1, "its message read here")
        # ... and this worker's copy wakes the waiter here, then is a duplicate for Redis.
        assert await waiting.publish(event()) is True
        assert publish_outcome.get() == "duplicate"
        assert future.done()
        for data in held:  # the other worker's message comes after that reply
            bus._on_data(data)
        await waiting.hooks.drain()
        assert hooked == ["wf-1"]
        assert (waiting.registry.dispatched, waiting.registry.duplicates) == (1, 0)
        assert bus.delivered == 1  # it reached this process once, as before
        assert not bus._echoes and not bus._handed
        waiting.leave("wf-1", future)
    finally:
        await waiting.close()


async def test_a_copy_another_worker_published_while_ours_was_on_its_way_is_skipped(
    make_bus: MakeBus,
) -> None:
    bus, other = make_bus(), make_bus()
    hooked: list[str] = []
    waiting = engine(bus, hooked)
    try:
        await waiting.start()
        await other.start(lambda ev: None)
        future = waiting.enter("wf-1", first_poll=3600)
        await eventually(lambda: len(waiting.scheduler) == 1, "its lookup done: it waits")
        gate = Gate(bus)
        publishing = asyncio.create_task(waiting.publish(event()))
        await gate.reached.wait()
        assert future.done()
        # Another worker's copy of the same webhook (other bytes: received elsewhere) wins.
        copy = WebhookEvent(
            workflow_id="wf-1", status="COMPLETED", event_id="e-1", raw=b"{}", received_at=5.0
        )
        assert await other.publish_once(
            copy, terminal=True, mark="published:id:e-1", mark_ttl=60.0
        ) == "published"  # fmt: skip
        await eventually(lambda: bus.delivered == 1, "its message read here")
        gate.opened.set()
        assert await publishing is True
        assert bus.published == 0  # a duplicate for Redis
        await waiting.hooks.drain()
        assert hooked == ["wf-1"]
        assert (waiting.registry.dispatched, waiting.registry.duplicates) == (1, 0)
        assert not bus._echoes and not bus._handed
        waiting.leave("wf-1", future)
    finally:
        await waiting.close()


async def test_redis_down_still_acknowledges_what_a_waiter_here_needed_once(
    make_bus: MakeBus, redis_server: RedisServer
) -> None:
    bus = make_bus()
    hooked: list[str] = []
    waiting = engine(bus, hooked)
    try:
        await waiting.start()
        future = waiting.enter("wf-1", first_poll=3600)
        redis_server.stop()
        async with asyncio.timeout(30):
            assert await waiting.publish(event()) is True  # needed here: acknowledged
            assert future.done()
            # A retry when nobody here waits any more: handled here before, not needed now.
            waiting.leave("wf-1", future)
            assert await waiting.publish(event()) is False
            assert publish_outcome.get() == "not_published"
        await waiting.hooks.drain()
        assert hooked == ["wf-1"]
        assert (waiting.registry.dispatched, waiting.registry.duplicates) == (1, 1)
    finally:
        await waiting.close()


async def test_non_terminal_events_and_events_nobody_here_awaits_take_the_usual_path(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()
    calls: list[bool] = []
    publish_once = bus.publish_once

    async def spy(ev: WebhookEvent, **options: Any) -> str:
        calls.append(options.get("delivered", False))
        return await publish_once(ev, **options)

    bus.publish_once = spy  # type: ignore[method-assign,assignment]
    waiting = engine(bus, [])
    try:
        await waiting.start()
        future = waiting.enter("wf-1", first_poll=3600)
        assert await waiting.publish(event(status="RUNNING", event_id="e-0")) is True
        assert not future.done()
        assert await waiting.publish(event("wf-2", event_id="e-2")) is True
        assert await waiting.publish(event(event_id="e-1")) is True
        assert future.done()
        assert calls == [False, False, True]
        waiting.leave("wf-1", future)
    finally:
        await waiting.close()
