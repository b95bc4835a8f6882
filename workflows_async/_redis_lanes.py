"""RedisBus's connections for the webhook path (private): a command written straight to a
connection of the bus's own, its reply read straight back.

Why: redis-py's client spends about as much CPU around a command as the round trip to a local
Redis takes (measured on one ``publish_once``, idle loop: 82 us through ``Redis.evalsha``, 54 us
through a held connection's ``send_packed_command`` and ``read_response``, 26 us the bare
socket). Per command it checks a connection out of the pool (a lock, and a read of the socket to
see that it is still sound), wraps the call in its retry and observability layers, starts a
task to time the write and a timer for the read, and parses the reply a line per awaited read.
This module keeps what the bus needs of that: a connection made and connected by redis-py from
the pool's settings (TLS, AUTH, database, protocol version and Sentinel stay its business), one
deadline per command, and a fresh connection when a reused one turns out to be gone. Once
connected, commands and replies go straight through the streams redis-py opened
(``Connection._reader``/``_writer``, there in redis-py 5 to 8; without them, through
``send_packed_command`` and ``read_response``), parsed by ``_resp.py``.

Invariants: a connection is reused only after a command on it ended with its whole reply (a
value or an error reply) and nothing else pending; any other end (the connection failed or
sent what a command does not get, the deadline passed, the caller was cancelled) drops it,
disconnected. At most ``keep`` connections wait idle; how many are in use at once is bounded
by the caller (RedisBus: its ``max_connections`` slots). A command that failed on a reused
connection because that connection was gone (Redis restarted, or closed an idle client) is
sent once more on a new one, as the owned client's one quick retry did; a command on a new
connection is never repeated, and neither is one that timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ._resp import ErrorReply, Push, parse_replies

__all__ = ["Lanes", "streams"]

_READ_SIZE = 65536


class _Lane:
    """One connection, and the streams to speak on it directly (None: through redis-py)."""

    __slots__ = ("connection", "reader", "writer")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None


class Lanes:
    """Connections like those of ``pool`` (a ``redis.asyncio.ConnectionPool``), kept apart from
    it, each carrying one command at a time; ``timeout`` bounds each command (connecting,
    writing, reading), or nothing when None."""

    def __init__(self, pool: Any, *, timeout: float | None, keep: int) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import NoScriptError, ResponseError

        # The deadline is ours: one timer per command instead of redis-py's two.
        self._settings = {**pool.connection_kwargs, "socket_timeout": None}
        self._make = pool.connection_class
        self._timeout = timeout
        self._keep = keep
        self._idle: list[_Lane] = []  # last in, first out: the warmest connection first
        self._reply_error: type[BaseException] = ResponseError
        self._no_script: type[BaseException] = NoScriptError
        self._gone: tuple[type[BaseException], ...] = (RedisConnectionError, ConnectionError)
        self._closed = False
        self.opened = 0  # connections made for commands (tests and figures)

    def connection(self) -> Any:
        """A new, unconnected connection like the lanes' (the subscription takes one)."""
        return self._make(**self._settings)

    async def call(self, packed: bytes) -> Any:
        """Send ``packed`` (``_resp.command``) and return the reply; an error reply raises
        redis-py's exception for it (``NoScriptError``, else ``ResponseError``), a failure of
        the connection ``ConnectionError``/``OSError``, the deadline ``TimeoutError``."""
        if self._idle:
            lane = self._idle.pop()
            try:
                return await self._once(lane, packed)
            except self._gone:
                pass  # gone while idle (nothing was answered): once more, on a new one
        self.opened += 1
        return await self._once(_Lane(self.connection()), packed)

    async def close(self) -> None:
        """Disconnect the idle connections; those in use are dropped when their command ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for lane in idle:
            await _drop(lane)

    async def _once(self, lane: _Lane, packed: bytes) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._round_trip(lane, packed)
        except self._reply_error:
            await self._give_back(lane)  # an error reply, read whole: still sound
            raise
        except BaseException:
            await _drop(lane)
            raise
        await self._give_back(lane)
        return reply

    async def _round_trip(self, lane: _Lane, packed: bytes) -> Any:
        connection = lane.connection
        if not connection.is_connected:
            await connection.connect()
            lane.reader, lane.writer = streams(connection) or (None, None)
        reader, writer = lane.reader, lane.writer
        if reader is None or writer is None:  # a redis-py that keeps its streams elsewhere
            await connection.send_packed_command(packed, check_health=False)
            return await connection.read_response()
        if reader.at_eof() or writer.is_closing():
            raise ConnectionError("Redis closed the connection")
        writer.write(packed)
        pending = b""
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise ConnectionError("Redis closed the connection")
            replies, pending = parse_replies(pending + data)
            replies = [reply for reply in replies if not isinstance(reply, Push)]  # notices
            if replies:
                break
        if len(replies) > 1 or pending:
            raise ConnectionError("Redis sent more than one reply to one command")
        [reply] = replies
        if isinstance(reply, ErrorReply):
            error = self._no_script if reply.startswith("NOSCRIPT") else self._reply_error
            raise error(reply)
        return reply

    async def _give_back(self, lane: _Lane) -> None:
        if not self._closed and len(self._idle) < self._keep:
            self._idle.append(lane)
        else:
            await _drop(lane)


def streams(connection: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """The streams a connected redis-py connection reads and writes; None when this version of
    redis-py keeps them elsewhere (its own methods are used then)."""
    reader = getattr(connection, "_reader", None)
    writer = getattr(connection, "_writer", None)
    if isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter):
        return reader, writer
    return None


async def _drop(lane: _Lane) -> None:
    with contextlib.suppress(Exception):
        await lane.connection.disconnect(nowait=True)
