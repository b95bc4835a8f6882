"""RedisBus's connections for the webhook path (private): a command written straight to a
connection of the bus's own, its reply read straight back.

Why: redis-py's client spends about as much CPU around a command as the round trip to a local
Redis takes (measured on one ``publish_once``: 90 us through ``Redis.evalsha``, 45 us on a
connection of its own, 28 us the bare socket). Per command it checks a connection out of the
pool (a lock, and a read of the socket to see that it is still sound), wraps the call in its
retry and observability layers, starts a task to time the write and a timer for the read,
and runs the reply through a callback. This module keeps what the bus needs of that: a
connection made by redis-py from the pool's settings (so TLS, AUTH, the database, the protocol
version and Sentinel are redis-py's business), one deadline per command, and a fresh connection
when a reused one turns out to be gone.

Invariants: a connection is reused only after a command on it ended with a complete reply (a
value or an error reply); any other end (the connection failed, the deadline passed, the caller
was cancelled) drops it, disconnected. At most ``keep`` connections wait idle; how many are in
use at once is bounded by the caller (RedisBus: its ``max_connections`` slots). A command that
failed on a reused connection, because that connection was gone (Redis restarted, or closed an
idle client), is sent once more on a new one, as the owned client's one quick retry did; a
command on a new connection is never repeated, and neither is one that timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["Lanes", "command"]


def command(*parts: bytes) -> bytes:
    """One command in the Redis protocol (an array of bulk strings), ready to write."""
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)])


class Lanes:
    """Connections like those of ``pool`` (a ``redis.asyncio.ConnectionPool``), kept apart from
    it, each carrying one command at a time; ``timeout`` bounds each command (connecting,
    writing, reading), or nothing when None."""

    def __init__(self, pool: Any, *, timeout: float | None, keep: int) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError

        # The deadline is ours: one timer per command instead of redis-py's two.
        self._settings = {**pool.connection_kwargs, "socket_timeout": None}
        self._make = pool.connection_class
        self._timeout = timeout
        self._keep = keep
        self._idle: list[Any] = []  # last in, first out: the warmest connection first
        self._reply_error: type[BaseException] = ResponseError
        self._gone: type[BaseException] = RedisConnectionError
        self._closed = False
        self.opened = 0  # connections made for commands (tests and figures)

    async def call(self, packed: bytes) -> Any:
        """Send ``packed`` (see :func:`command`) and return the reply; an error reply raises
        redis-py's exception for it (``NoScriptError``, ``ResponseError``), a failure of the
        connection ``ConnectionError``/``OSError``, the deadline ``TimeoutError``."""
        if self._idle:
            connection = self._idle.pop()
            try:
                return await self._once(connection, packed)
            except self._gone:
                pass  # gone while idle (nothing was answered): once more, on a new one
        self.opened += 1
        return await self._once(self.connection(), packed)

    async def close(self) -> None:
        """Disconnect the idle connections; those in use are dropped when their command ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await _drop(connection)

    def connection(self) -> Any:
        """A new, unconnected connection like the lanes' (the subscription takes one)."""
        return self._make(**self._settings)

    async def _once(self, connection: Any, packed: bytes) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                await connection.send_packed_command(packed, check_health=False)
                reply = await connection.read_response()
        except self._reply_error:
            await self._give_back(connection)  # an error reply, read whole: still sound
            raise
        except BaseException:
            await _drop(connection)
            raise
        await self._give_back(connection)
        return reply

    async def _give_back(self, connection: Any) -> None:
        if not self._closed and len(self._idle) < self._keep:
            self._idle.append(connection)
        else:
            await _drop(connection)


async def _drop(connection: Any) -> None:
    with contextlib.suppress(Exception):
        await connection.disconnect(nowait=True)
