"""The ``redis_server`` fixture: a real redis-server on a free localhost port for each test
(``workflows_async.testing.RedisServer``), stopped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from workflows_async.redis_bus import RedisBus
from workflows_async.testing import RedisServer, RedisServerError

__all__ = ["MakeBus", "RedisServer", "RedisServerError", "bus_maker", "redis_server"]

MakeBus = Callable[..., RedisBus]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started redis-server on a free localhost port, stopped after the test."""
    with RedisServer() as server:
        yield server


@asynccontextmanager
async def bus_maker(server: RedisServer, namespace: str) -> AsyncIterator[MakeBus]:
    """``make(client=None, **options)`` builds RedisBus instances on ``server`` (or on the
    given ``redis.asyncio.Redis`` client) under ``namespace``, with quick reconnects and PINGs
    unless told otherwise; every bus made is closed on exit."""
    buses: list[RedisBus] = []

    def make(client: Any = None, **options: Any) -> RedisBus:
        options.setdefault("namespace", namespace)
        options.setdefault("reconnect_max_delay", 0.2)
        options.setdefault("ping_interval", 0.5)
        bus = RedisBus(server.url if client is None else client, **options)
        buses.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in buses:
            await bus.close()
