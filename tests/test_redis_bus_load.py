"""RedisBus under load, against a real redis-server: a local connection limit is never taken for
"Redis is down", so a claim never fails open on it; long TTLs are kept as given.

Each test that fills a pool checks the claim keys in Redis itself, not only the bus's answers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_server import MakeBus, RedisServer, bus_maker

from workflows_async.errors import ConfigurationError
from workflows_async.events import WebhookEvent
from workflows_async.redis_bus import RedisBus

NS = "load_ns"
WEEK = 7 * 24 * 3600.0
N = 300


def event(workflow_id: str = "wf-1") -> WebhookEvent:
    return WebhookEvent(workflow_id=workflow_id, status="COMPLETED", event_id="e-1", raw=b"{}")


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client to look at Redis directly."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_bus(redis_server: RedisServer) -> AsyncIterator[MakeBus]:
    async with bus_maker(redis_server, NS) as make:
        yield make


@pytest.fixture
async def small_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A caller's client whose (ordinary, non-blocking) pool holds only 10 connections."""
    client = aioredis.Redis.from_url(redis_server.url, max_connections=10)
    yield client
    await client.aclose()


async def claims_of_one_key(bus: RedisBus) -> list[bool]:
    async with asyncio.timeout(30):
        return await asyncio.gather(*(bus.claim("hook:h:id:e-1", 60.0) for _ in range(N)))


async def test_many_claims_of_one_key_with_a_small_pool_grant_it_once(make_bus: MakeBus) -> None:
    bus = make_bus(max_connections=10)
    assert (await claims_of_one_key(bus)).count(True) == 1
    assert bus.overloaded == 0


async def test_many_claims_of_one_key_with_the_default_pool_grant_it_once(
    make_bus: MakeBus,
) -> None:
    """redis-py's default pool refuses the 101st connection: the bus must not fail open on it."""
    bus = make_bus()
    assert (await claims_of_one_key(bus)).count(True) == 1


async def test_many_claims_through_a_small_external_pool_grant_it_once(
    make_bus: MakeBus, small_client: aioredis.Redis
) -> None:
    bus = make_bus(small_client)
    assert (await claims_of_one_key(bus)).count(True) == 1
    assert await small_client.ping() is True


@pytest.mark.parametrize("external", [False, True])
async def test_many_claims_of_distinct_keys_are_all_really_taken(
    make_bus: MakeBus, small_client: aioredis.Redis, raw: aioredis.Redis, external: bool
) -> None:
    bus = make_bus(small_client) if external else make_bus(max_connections=10)
    async with asyncio.timeout(30):
        taken = await asyncio.gather(*(bus.claim(f"k-{i}", 60.0) for i in range(N)))
    assert taken == [True] * N
    # Decided by Redis, not failed open: every key is there.
    assert await raw.exists(*(f"{NS}:claim:k-{i}" for i in range(N))) == N
    again = await asyncio.gather(*(bus.claim(f"k-{i}", 60.0) for i in range(N)))
    assert again == [False] * N
    assert bus.overloaded == 0


async def test_publish_with_a_small_pool_waits_for_a_connection(
    make_bus: MakeBus, small_client: aioredis.Redis
) -> None:
    for bus in (make_bus(max_connections=5), make_bus(small_client)):
        async with asyncio.timeout(30):
            sent = await asyncio.gather(
                *(bus.publish(event(f"wf-{i}"), terminal=True) for i in range(N))
            )
        assert sent == [True] * N
        found = await bus.last_terminal([f"wf-{i}" for i in range(N)])
        assert len(found) == N


async def hold_every_connection(client: aioredis.Redis, count: int) -> list[Any]:
    """Take ``count`` connections out of ``client``'s pool (it then has none to give)."""
    pool = client.connection_pool
    return [await pool.get_connection() for _ in range(count)]  # type: ignore[no-untyped-call]


async def give_back(client: aioredis.Redis, held: list[Any]) -> None:
    for connection in held:
        await client.connection_pool.release(connection)


async def test_an_exhausted_pool_never_grants_a_claimed_key(
    make_bus: MakeBus, small_client: aioredis.Redis
) -> None:
    bus = make_bus(small_client, pool_timeout=0.2)
    assert await bus.claim("taken", 60.0) is True
    held = await hold_every_connection(small_client, 10)
    try:
        async with asyncio.timeout(10):
            # Cannot be decided: Redis is fine, this process is out of connections. Fail closed.
            assert await bus.claim("taken", 60.0) is False
            assert await bus.claim("free", 60.0) is False
        assert bus.overloaded == 2
    finally:
        await give_back(small_client, held)
    assert await bus.claim("taken", 60.0) is False  # decided by Redis again
    assert await bus.claim("free", 60.0) is True


async def test_a_claim_waits_for_a_connection_given_back_in_time(
    make_bus: MakeBus, small_client: aioredis.Redis
) -> None:
    bus = make_bus(small_client, pool_timeout=10.0)
    assert await bus.claim("taken", 60.0) is True
    held = await hold_every_connection(small_client, 10)
    waiting = [
        asyncio.create_task(bus.claim("taken", 60.0)),
        asyncio.create_task(bus.claim("free", 60.0)),
        asyncio.create_task(bus.publish(event(), terminal=True)),
    ]
    await asyncio.sleep(0.2)
    assert not any(task.done() for task in waiting)
    await give_back(small_client, held)
    async with asyncio.timeout(10):
        assert await asyncio.gather(*waiting) == [False, True, True]
    assert bus.overloaded == 0


async def test_an_exhausted_blocking_pool_of_the_caller_fails_closed_too(
    redis_server: RedisServer, make_bus: MakeBus
) -> None:
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_server.url, max_connections=2, timeout=0.1
    )
    client = aioredis.Redis.from_pool(pool)
    try:
        bus = make_bus(client, pool_timeout=0.3)
        held = await hold_every_connection(client, 2)
        try:
            assert await bus.claim("k", 60.0) is False
            assert await bus.publish(event(), terminal=True) is False
            assert bus.overloaded == 2
        finally:
            await give_back(client, held)
        assert await bus.claim("k", 60.0) is True
    finally:
        await client.aclose()


async def test_redis_down_still_fails_open_with_a_small_pool(
    redis_server: RedisServer, make_bus: MakeBus
) -> None:
    bus = make_bus(max_connections=2, pool_timeout=5.0)
    redis_server.stop()
    async with asyncio.timeout(30):
        answers = await asyncio.gather(*(bus.claim("k", 60.0) for _ in range(20)))
        assert answers == [True] * 20  # Redis is unreachable: fail open, as documented
        assert await bus.publish(event(), terminal=True) is False
        assert await bus.last_terminal(["wf-1"]) == []
    assert bus.overloaded == 0


async def test_long_ttls_are_kept_as_given(make_bus: MakeBus, raw: aioredis.Redis) -> None:
    bus = make_bus()
    assert bus.terminal_ttl >= WEEK
    assert await bus.publish(event("wf-old"), terminal=True)
    assert await bus.claim("published:id:e-1", WEEK) is True
    assert await bus.claim("hook:h:id:e-1", 30 * 24 * 3600.0) is True
    terminal_ms = await raw.pttl(f"{NS}:terminal:wf-old")
    published_ms = await raw.pttl(f"{NS}:claim:published:id:e-1")
    hook_ms = await raw.pttl(f"{NS}:claim:hook:h:id:e-1")
    assert WEEK * 1000 - 60_000 < terminal_ms <= WEEK * 1000
    assert WEEK * 1000 - 60_000 < published_ms <= WEEK * 1000
    assert 30 * 24 * 3600 * 1000 - 60_000 < hook_ms <= 30 * 24 * 3600 * 1000


@pytest.mark.parametrize("ttl", [0.0, -1.0, math.nan, math.inf])
async def test_a_claim_ttl_that_cannot_be_kept_is_refused(make_bus: MakeBus, ttl: float) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        await make_bus().claim("k", ttl)


@pytest.mark.parametrize(
    "options", [{"max_connections": 0}, {"pool_timeout": 0.0}, {"pool_timeout": math.nan}]
)
def test_bad_load_settings(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisBus("redis://127.0.0.1:1/0", **options)


class CuttingProxy:
    """A TCP relay to Redis that, once, lets a command containing ``needle`` reach the server and
    then cuts the connection before the reply comes back: the client's retry sends it again."""

    def __init__(self, redis_port: int, needle: bytes) -> None:
        self.redis_port = redis_port
        self.needle = needle
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._clients: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for client in self._clients:  # since 3.12, wait_closed waits for open connections
            client.close()
        await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._clients.append(client_w)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.redis_port)
        cut = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.cuts == 0 and self.needle in data:
                    self.cuts += 1
                    cut.set()  # no reply goes back from here on
                    server_w.write(data)
                    await server_w.drain()
                    await asyncio.sleep(5)  # the reply, read and dropped, ends the relay
                    return
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while (data := await server_r.read(65536)) and not cut.is_set():
                client_w.write(data)
                await client_w.drain()

        relays = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for relay in relays:
                relay.cancel()
            for writer in (client_w, server_w):
                writer.close()


async def test_a_claim_whose_reply_was_lost_and_retried_is_still_won(
    redis_server: RedisServer, make_bus: MakeBus, raw: aioredis.Redis
) -> None:
    """SET NX reached Redis, the reply did not come back, redis-py sent it again: the second try
    finds the key set (by us). The claim must still be ours, or nobody runs the work."""
    proxy = CuttingProxy(redis_server.port, b"claim:hook:h:id:e-9")
    async with proxy as url:
        bus = make_bus(url)
        async with asyncio.timeout(10):
            assert await bus.claim("hook:h:id:e-9", 60.0) is True
    assert proxy.cuts == 1
    assert await raw.exists(f"{NS}:claim:hook:h:id:e-9") == 1
    assert await make_bus().claim("hook:h:id:e-9", 60.0) is False


async def test_claims_through_a_decode_responses_client(
    redis_server: RedisServer, make_bus: MakeBus
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        bus = make_bus(client)
        answers = await asyncio.gather(*(bus.claim("k", 60.0) for _ in range(20)))
        assert answers.count(True) == 1
    finally:
        await client.aclose()
