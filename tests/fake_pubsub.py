"""A pretend Redis for the subscription reader: no server, no socket, every fault on demand.

Invariants: a :class:`FakePubSub` has the redis-py ``PubSub`` methods the reader uses
(``subscribe``, ``get_message``, ``ping``, ``unsubscribe``, ``aclose``, ``connection``) and
raises redis-py's own ``ConnectionError`` where a real one would; :class:`FakeRedis` is the
server side: it makes them, publishes to the subscribed ones, drops connections, ignores or
fails PINGs, and records every read timeout the reader asked for.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["FakeConnection", "FakePubSub", "FakeRedis"]

Message = dict[str, Any]


class FakeConnection:
    def __init__(self) -> None:
        self.is_connected = True


class FakePubSub:
    """One pub/sub object, as ``redis.asyncio.Redis.pubsub()`` returns it."""

    def __init__(self, server: FakeRedis) -> None:
        self.server = server
        self.connection: FakeConnection | None = None
        self.channels: list[str] = []
        self.unsubscribed = False
        self.closed = False
        self.read_timeouts: list[float | None] = []  # get_message(timeout=...) once subscribed
        self._inbox: asyncio.Queue[Message | BaseException] = asyncio.Queue()

    @property
    def connected(self) -> bool:
        return self.connection is not None and self.connection.is_connected

    async def subscribe(self, *channels: str) -> None:
        if not self.server.up:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
        self.connection = FakeConnection()
        self.channels.extend(channels)
        if self.server.confirm:
            for channel in channels:
                self._inbox.put_nowait({"type": "subscribe", "channel": channel, "data": 1})

    async def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> Message | None:
        if self.channels:
            self.read_timeouts.append(timeout)
        if not self.connected:
            raise RedisConnectionError("Connection closed by server.")
        try:
            async with asyncio.timeout(timeout):
                item = await self._inbox.get()
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def ping(self, message: Any = None) -> None:
        self.server.pings += 1
        if not self.connected or self.server.failing_pings > 0:
            self.server.failing_pings = max(0, self.server.failing_pings - 1)
            raise RedisConnectionError("Error 32 while writing to socket. Broken pipe.")
        if self.server.answer_pings:
            self._inbox.put_nowait({"type": "pong", "channel": None, "data": b""})

    async def unsubscribe(self, *channels: str) -> None:
        self.unsubscribed = True

    async def aclose(self) -> None:
        self.closed = True
        if self.connection is not None:
            self.connection.is_connected = False

    def deliver(self, message: Message) -> None:
        """The server sends ``message`` on this connection."""
        self._inbox.put_nowait(message)

    def cut(self) -> None:
        """The connection breaks: the read in progress (or the next one) fails."""
        if self.connection is not None:
            self.connection.is_connected = False
        self._inbox.put_nowait(RedisConnectionError("Connection closed by server."))


class FakeRedis:
    """The server side. ``up``: False refuses connections; ``confirm``: False leaves SUBSCRIBE
    unanswered; ``answer_pings``: False is a silent peer (no PONG); ``failing_pings``: that
    many PINGs fail to send."""

    def __init__(self) -> None:
        self.up = True
        self.confirm = True
        self.answer_pings = True
        self.failing_pings = 0
        self.pings = 0
        self.made: list[FakePubSub] = []

    def pubsub(self) -> FakePubSub:
        made = FakePubSub(self)
        self.made.append(made)
        return made

    @property
    def subscribed(self) -> list[FakePubSub]:
        return [p for p in self.made if p.connected and p.channels and not p.closed]

    def publish(self, channel: str, data: bytes) -> int:
        """PUBLISH: the message goes to every connected subscriber of ``channel``."""
        receivers = [p for p in self.subscribed if channel in p.channels]
        for receiver in receivers:
            receiver.deliver({"type": "message", "channel": channel, "data": data})
        return len(receivers)

    def drop_all(self) -> None:
        """Every connection breaks (a restart, a network cut)."""
        for made in self.subscribed:
            made.cut()
