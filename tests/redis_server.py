"""The ``redis_server`` fixture: a real redis-server on a free localhost port for each test
(``workflows_async.testing.RedisServer``), stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workflows_async.testing import RedisServer, RedisServerError

__all__ = ["RedisServer", "RedisServerError", "redis_server"]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A started redis-server on a free localhost port, stopped after the test."""
    with RedisServer() as server:
        yield server
