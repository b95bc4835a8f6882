"""The subscription reader of RedisBus (``_redis_reader.Subscription``): against a fake pub/sub
that drops connections, ignores or fails PINGs on demand, and against a real redis-server, read
both through redis-py's ``PubSub`` (a caller's client) and through ``LeanPubSub`` (a bus's own)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import redis.asyncio as aioredis
from eventually import eventually
from fake_pubsub import FakeRedis
from redis.exceptions import RedisError
from redis_server import RedisServer

from workflows_async import _redis_lanes
from workflows_async._redis_lanes import Lanes
from workflows_async._redis_pubsub import LeanPubSub
from workflows_async._redis_reader import PubSub, Subscription
from workflows_async.redis_bus import RedisBus

CHANNEL = "ns:events"
ERRORS = (RedisError, OSError)


class Reader:
    """A Subscription and what it handed over: messages, gaps, catch-ups."""

    def __init__(self, open_pubsub: Callable[[], PubSub], **options: Any) -> None:
        self.got: list[Any] = []
        self.gaps = 0
        self.catch_ups = 0
        options.setdefault("ping_interval", 0.05)
        options.setdefault("reconnect_max_delay", 0.02)
        self.sub = Subscription(
            open_pubsub,
            CHANNEL,
            on_message=self.got.append,
            on_gap=self._gap,
            errors=ERRORS,
            where="redis://test",
            **options,
        )
        self.sub.on_reconnect = self._catch_up

    def _gap(self) -> None:
        self.gaps += 1

    async def _catch_up(self) -> None:
        self.catch_ups += 1

    async def start(self) -> None:
        self.sub.start()
        assert await self.sub.first_attempt(10.0)


@asynccontextmanager
async def reading(open_pubsub: Callable[[], PubSub], **options: Any) -> AsyncIterator[Reader]:
    reader = Reader(open_pubsub, **options)
    try:
        yield reader
    finally:
        await reader.sub.close()


@pytest.fixture
def fake() -> FakeRedis:
    return FakeRedis()


# -- against the fake --------------------------------------------------------------------------


async def test_messages_are_handed_over_in_order_once_subscribed(fake: FakeRedis) -> None:
    async with reading(fake.pubsub) as r:
        assert not r.sub.healthy
        await r.start()
        assert r.sub.healthy
        for n in range(5):
            assert fake.publish(CHANNEL, b"%d" % n) == 1
        fake.publish("other:events", b"not ours")
        await eventually(lambda: len(r.got) == 5, "five messages")
        assert r.got == [b"0", b"1", b"2", b"3", b"4"]
        assert (r.sub.reconnects, r.gaps, r.catch_ups) == (0, 0, 0)


async def test_a_dropped_connection_is_a_gap_and_catch_up_runs_once(fake: FakeRedis) -> None:
    async with reading(fake.pubsub) as r:
        await r.start()
        first = fake.made[0]
        fake.up = False
        fake.drop_all()
        await eventually(lambda: not r.sub.healthy, "the drop is noticed")
        assert first.closed
        assert fake.publish(CHANNEL, b"lost") == 0  # nobody subscribed: pub/sub keeps nothing
        assert r.sub.reconnects == 0

        fake.up = True
        await eventually(lambda: r.sub.healthy and r.catch_ups == 1, "re-subscribed, caught up")
        assert (r.sub.reconnects, r.gaps) == (1, 1)
        fake.publish(CHANNEL, b"after")
        await eventually(lambda: r.got == [b"after"], "delivery resumes")


async def test_started_while_redis_is_down_catches_up_once_it_is_up(fake: FakeRedis) -> None:
    fake.up = False
    async with reading(fake.pubsub) as r:
        await r.start()  # returns after the first (failed) attempt
        assert not r.sub.healthy
        assert len(fake.made) >= 1
        fake.up = True
        await eventually(lambda: r.sub.healthy and r.catch_ups == 1, "subscribed, caught up")
        assert r.sub.reconnects == 1


async def test_an_unconfirmed_subscribe_is_retried(fake: FakeRedis) -> None:
    fake.confirm = False
    async with reading(fake.pubsub) as r:
        await r.start()
        assert not r.sub.healthy
        await eventually(lambda: len(fake.made) >= 2, "a second attempt")
        assert fake.made[0].closed
        fake.confirm = True
        await eventually(lambda: r.sub.healthy, "confirmed at last")


async def test_pongs_keep_an_idle_subscription(fake: FakeRedis) -> None:
    async with reading(fake.pubsub) as r:
        await r.start()
        await eventually(lambda: fake.pings >= 4, "several PINGs while idle")
        assert r.sub.healthy
        assert len(fake.made) == 1
        assert (r.sub.reconnects, r.catch_ups) == (0, 0)


async def test_reads_block_on_the_connection_without_a_timer_per_message(fake: FakeRedis) -> None:
    async with reading(fake.pubsub) as r:
        await r.start()
        for n in range(20):
            fake.publish(CHANNEL, b"%d" % n)
        await eventually(lambda: len(r.got) == 20 and fake.pings >= 2, "messages, then quiet")
        confirmation, *reads = fake.made[0].read_timeouts
        assert confirmation is not None  # waiting for SUBSCRIBE's answer has a deadline
        assert len(reads) > 20
        assert set(reads) == {None}  # the rest block; the watch is one timer per quiet spell
        assert r.sub.pings == fake.pings


async def test_a_short_read_timeout_brings_the_ping_forward(fake: FakeRedis) -> None:
    """Older redis-py ends a blocking read at the connection's socket_timeout: PING sooner."""
    async with reading(fake.pubsub, ping_interval=30.0, read_timeout=0.09) as r:
        assert r.sub.quiet == pytest.approx(0.06)
        await r.start()
        await eventually(lambda: fake.pings >= 3, "PINGs at the shorter pace")
        assert r.sub.healthy and r.sub.reconnects == 0
    assert Subscription(  # without one, the ping interval stands
        fake.pubsub, CHANNEL, on_message=print, on_gap=print, errors=ERRORS, where="w",
        ping_interval=2.0, reconnect_max_delay=1.0,
    ).quiet == 2.0  # fmt: skip


async def test_a_silent_peer_is_dropped_after_an_unanswered_ping(
    fake: FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    async with reading(fake.pubsub) as r:
        await r.start()
        fake.answer_pings = False
        await eventually(lambda: fake.made[0].closed, "the silent connection is given up")
        assert fake.pings >= 1
        assert "no PONG" in caplog.text
        fake.answer_pings = True
        await eventually(lambda: r.sub.healthy and r.catch_ups >= 1, "a new subscription")
        assert r.sub.reconnects >= 1


async def test_a_ping_that_cannot_be_sent_means_reconnect(fake: FakeRedis) -> None:
    async with reading(fake.pubsub) as r:
        await r.start()
        fake.failing_pings = 1
        await eventually(lambda: r.catch_ups == 1 and r.sub.healthy, "reconnected, caught up")
        assert fake.made[0].closed
        assert len(fake.made) == 2


async def test_redis_py_reconnecting_underneath_is_a_gap(fake: FakeRedis) -> None:
    async with reading(fake.pubsub) as r:
        await r.start()
        # redis-py made the connection again by itself and replayed SUBSCRIBE.
        fake.made[0].deliver({"type": "subscribe", "channel": CHANNEL, "data": 1})
        await eventually(lambda: r.catch_ups == 1, "catch-up after the gap")
        assert r.sub.healthy
        assert (r.sub.reconnects, len(fake.made)) == (1, 1)


async def test_failures_of_the_callbacks_are_logged_and_reading_goes_on(
    fake: FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    def on_message(data: Any) -> None:
        if data == b"boom":
            raise ValueError("handler blew up")
        got.append(data)

    async def on_reconnect() -> None:
        raise ValueError("catch-up blew up")

    got: list[Any] = []
    sub = Subscription(
        fake.pubsub,
        CHANNEL,
        on_message=on_message,
        on_gap=lambda: None,
        errors=ERRORS,
        where="redis://test",
        ping_interval=0.05,
        reconnect_max_delay=0.02,
    )
    sub.on_reconnect = on_reconnect
    try:
        sub.start()
        await sub.first_attempt(10.0)
        fake.publish(CHANNEL, b"boom")
        fake.made[0].deliver({"type": "subscribe", "channel": CHANNEL, "data": 1})
        fake.publish(CHANNEL, b"ok")
        await eventually(lambda: got == [b"ok"], "the message after the failures")
        await eventually(lambda: "on_reconnect failed" in caplog.text, "the hook's failure logged")
        assert "handling a message failed" in caplog.text
        assert sub.healthy
        assert len(fake.made) == 1
    finally:
        await sub.close()


async def test_close_unsubscribes_and_cancels_a_running_catch_up(fake: FakeRedis) -> None:
    before = asyncio.all_tasks()
    started = asyncio.Event()

    async def slow_catch_up() -> None:
        started.set()
        await asyncio.Event().wait()  # never ends by itself

    r = Reader(fake.pubsub)
    r.sub.on_reconnect = slow_catch_up
    await r.start()
    fake.made[0].deliver({"type": "subscribe", "channel": CHANNEL, "data": 1})
    await asyncio.wait_for(started.wait(), 10)
    await r.sub.close()
    await r.sub.close()  # idempotent
    assert asyncio.all_tasks() == before
    assert fake.made[0].unsubscribed and fake.made[0].closed
    assert not r.sub.healthy
    with pytest.raises(RuntimeError, match="closed"):
        r.sub.start()


async def test_close_before_the_first_attempt_ends_releases_the_waiter(fake: FakeRedis) -> None:
    fake.confirm = False
    r = Reader(fake.pubsub, ping_interval=30.0)  # the first attempt would wait 60 s
    r.sub.start()
    waiter = asyncio.create_task(r.sub.first_attempt(60.0))
    await eventually(lambda: len(fake.made) == 1, "the attempt began")
    await r.sub.close()
    assert await waiter is True


# -- against a real redis-server ---------------------------------------------------------------


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=2.0)
    yield client
    await client.aclose()


def pubsub_of(client: aioredis.Redis, kind: str) -> Callable[[], PubSub]:
    """``redis-py``: the client's own PubSub; ``lean``: LeanPubSub on connections made like
    the client's pool's (as a RedisBus made from a URL reads)."""
    if kind == "redis-py":
        return client.pubsub
    lanes = Lanes(client.connection_pool, timeout=None, keep=1)
    return partial(LeanPubSub, lanes.connection)


@pytest.fixture(params=["redis-py", "lean"])
def open_pubsub(request: pytest.FixtureRequest, client: aioredis.Redis) -> Callable[[], PubSub]:
    kind: str = request.param
    return pubsub_of(client, kind)


async def test_real_server_messages_and_a_killed_connection(
    client: aioredis.Redis, open_pubsub: Callable[[], PubSub]
) -> None:
    # The kill is noticed by the read failing, not by a PING; a PING interval of a second keeps
    # a loop stalled by a loaded machine from adding a reconnect of its own to the count.
    async with reading(open_pubsub, ping_interval=1.0) as r:
        await r.start()
        assert r.sub.healthy
        assert await client.publish(CHANNEL, b"one") == 1
        await eventually(lambda: r.got == [b"one"], "a message")
        assert await client.client_kill_filter(_type="pubsub") == 1
        await eventually(lambda: r.catch_ups == 1 and r.sub.healthy, "back, caught up")
        assert r.sub.reconnects == 1
        await client.publish(CHANNEL, b"two")
        await eventually(lambda: b"two" in r.got, "delivery resumes")


async def test_real_server_that_stops_answering_is_given_up_and_found_again(
    client: aioredis.Redis,
    open_pubsub: Callable[[], PubSub],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="workflows_async.redis_bus")
    async with reading(open_pubsub, ping_interval=0.2) as r:
        await r.start()
        await client.client_pause(1500, all=True)  # PINGs go unanswered meanwhile
        await eventually(lambda: not r.sub.healthy, "the silent server is given up")
        await eventually(lambda: r.sub.healthy and r.catch_ups >= 1, "subscribed again")
        assert "subscription lost: TimeoutError: no PONG" in caplog.text
        assert await client.publish(CHANNEL, b"after") >= 1
        await eventually(lambda: b"after" in r.got, "delivery resumes")


@pytest.mark.parametrize("kind", ["redis-py", "lean"])
async def test_real_server_idle_past_the_socket_timeout_stays_subscribed(
    redis_server: RedisServer, kind: str
) -> None:
    # A socket timeout of a second, not less: a loaded CI machine can stall the event loop for
    # a few hundred milliseconds, which would cut a PONG's read short and reconnect.
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=1.0)
    try:
        async with reading(pubsub_of(client, kind), ping_interval=5.0, read_timeout=1.0) as r:
            await r.start()
            await eventually(lambda: r.sub.pings >= 3, "idle for several socket timeouts")
            assert r.sub.healthy
            assert r.sub.reconnects == 0
            assert await client.publish(CHANNEL, b"still here") == 1
            await eventually(lambda: r.got == [b"still here"], "delivery")
    finally:
        await client.aclose()


async def test_redis_bus_tells_its_reader_the_socket_timeout(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.3)
    try:
        external = RedisBus(client, ping_interval=5.0)
        owned = RedisBus(redis_server.url, ping_interval=5.0)
        assert external._reader.quiet == pytest.approx(0.2)  # two thirds of the client's 0.3 s
        assert owned._reader.quiet == pytest.approx(2.0)  # two thirds of its own 3 s
        await owned.close()
        await external.close()
    finally:
        await client.aclose()


@pytest.mark.parametrize("direct", [True, False], ids=["streams", "redis-py methods"])
@pytest.mark.parametrize("protocol", [2, 3])
async def test_lean_pubsub_reads_each_kind_of_message_in_either_protocol(
    redis_server: RedisServer, protocol: int, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not direct:  # a redis-py that keeps its streams elsewhere: its read_response is used
        monkeypatch.setattr(_redis_lanes, "streams", lambda connection: None)
    client = aioredis.Redis.from_url(redis_server.url, protocol=protocol)
    pubsub = pubsub_of(client, "lean")()
    try:
        await pubsub.subscribe(CHANNEL)
        assert pubsub.connection.protocol in (protocol, str(protocol))
        first = await pubsub.get_message(timeout=5.0)
        assert first is not None and first["type"] == "subscribe"
        assert await client.publish(CHANNEL, b"a\r\nb") == 1
        await pubsub.ping()
        kinds = [await pubsub.get_message(timeout=5.0) for _ in range(2)]
        assert kinds == [{"type": "message", "data": b"a\r\nb"}, {"type": "pong", "data": b""}]
        assert await pubsub.get_message(timeout=0.01) is None  # nothing more: None, not stuck
        await client.publish(CHANNEL, b"after a timeout")  # the read resumes where it was
        assert await pubsub.get_message(timeout=5.0) == {
            "type": "message",
            "data": b"after a timeout",
        }
        await pubsub.unsubscribe()
        last = await pubsub.get_message(timeout=5.0)
        assert last is not None and last["type"] == "unsubscribe"
    finally:
        await pubsub.aclose()
        await client.aclose()
    assert pubsub.connection is None


async def test_lean_pubsub_authenticates_as_the_url_says_and_a_refusal_ends_it(
    redis_server: RedisServer,
) -> None:
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.acl_setuser("reader", enabled=True, passwords=["+pw"], commands=["+@all"],
                            keys=["*"], channels=[CHANNEL])  # fmt: skip
    await admin.acl_setuser("muted", enabled=True, passwords=["+pw"], commands=["+@all"],
                            keys=["*"], reset_channels=True)  # fmt: skip
    url = f"redis://reader:pw@127.0.0.1:{redis_server.port}/0"
    allowed, refused = (
        aioredis.Redis.from_url(url.replace("reader", user)) for user in ("reader", "muted")
    )
    try:
        pubsub = pubsub_of(allowed, "lean")()
        await pubsub.subscribe(CHANNEL)
        first = await pubsub.get_message(timeout=5.0)
        assert first is not None and first["type"] == "subscribe"
        await pubsub.aclose()
        pubsub = pubsub_of(refused, "lean")()
        await pubsub.subscribe(CHANNEL)
        with pytest.raises(ConnectionError, match="answered the subscription: NOPERM"):
            await pubsub.get_message(timeout=5.0)
        await pubsub.aclose()
    finally:
        for client in (allowed, refused, admin):
            await client.aclose()
