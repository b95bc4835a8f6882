"""RedisBus's subscription connection (private): the ``PubSub`` protocol that ``_redis_reader``
reads, on a connection of the bus's own, its messages parsed here.

Why: every event reaches every worker through the subscription, and the publishing worker
reads its own echo too, before the waiter it has just woken runs (the reply and the echo come
in the same turn of the event loop). redis-py's ``PubSub.get_message`` costs about 50 us of CPU
per message (health check, retry and reconnect wrappers, timeout bookkeeping, a parser that
awaits a stream read per line of the reply); parsing the bytes as they come costs a few. At
1,000 webhooks/s that was about 100 us of the publishing worker's wake-up p50.

Invariants: redis-py makes and connects the connection from the pool's settings (TLS, AUTH,
database, protocol version and Sentinel stay its business), without a socket timeout (the
reader watches silence itself); after that handshake the server sends nothing unasked, so every
byte that follows is read here, straight from the stream redis-py connected
(``Connection._reader``, there in redis-py 5 to 8; without it, one ``read_response`` per
message). Replies are RESP2 or RESP3 (a push is an array like any other); a PONG is a message
like any other. A read that is interrupted (the reader's watch, a ``timeout``) loses nothing:
bytes are taken off the stream only by a read that returns, and kept here until a whole reply
is in (``_resp.py`` parses). Nothing here reconnects: a failure, an error reply or a reply it
cannot parse ends the subscription, and the reader starts a new one (a gap it counts and
catches up on). ``subscribe``, ``ping`` and ``unsubscribe`` only write: their answers come as
messages.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from . import _redis_lanes
from ._resp import ErrorReply, command, parse_replies

__all__ = ["LeanPubSub"]

_READ_SIZE = 65536


class LeanPubSub:
    """One subscription attempt (see the module docstring); ``make_connection`` makes an
    unconnected redis-py connection like the pool's."""

    def __init__(self, make_connection: Callable[[], Any]) -> None:
        self._make = make_connection
        self.connection: Any = None  # a redis-py Connection once subscribe() ran
        self._stream: asyncio.StreamReader | None = None
        self._pending = b""  # the start of a reply not yet whole
        self._replies: deque[Any] = deque()

    async def subscribe(self, channel: str) -> None:
        connection = self.connection = self._make()
        await connection.connect()
        found = _redis_lanes.streams(connection)
        self._stream = found[0] if found is not None else None
        await self._send(b"SUBSCRIBE", channel.encode())

    async def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> dict[str, Any] | None:
        """The next message as ``{"type": ..., "data": ...}``; None when ``timeout`` seconds
        passed first (``timeout=None``: wait as long as it takes)."""
        while True:
            if not self._replies:
                if timeout is None:
                    await self._read()
                else:
                    try:
                        async with asyncio.timeout(timeout):
                            await self._read()
                    except TimeoutError:
                        return None
            message = _message(self._replies.popleft())
            if not (ignore_subscribe_messages and message["type"] in ("subscribe", "unsubscribe")):
                return message

    async def ping(self, message: Any = None) -> None:
        await self._send(b"PING")

    async def unsubscribe(self, *channels: str) -> None:
        await self._send(b"UNSUBSCRIBE", *(channel.encode() for channel in channels))

    async def aclose(self) -> None:
        connection, self.connection, self._stream = self.connection, None, None
        if connection is not None:
            await connection.disconnect()

    async def _read(self) -> None:
        """Wait for at least one more whole reply."""
        connection = self.connection
        if connection is None:
            raise RuntimeError("subscribe() first")
        if self._stream is None:  # a redis-py without the stream: its own parser
            self._replies.append(
                await connection.read_response(disconnect_on_error=False, push_request=True)
            )
            return
        while not self._replies:
            data = await self._stream.read(_READ_SIZE)
            if not data:
                raise ConnectionError("Redis closed the subscription's connection")
            replies, self._pending = parse_replies(self._pending + data)
            self._replies.extend(replies)

    async def _send(self, *parts: bytes) -> None:
        if self.connection is None:
            raise RuntimeError("subscribe() first")
        await self.connection.send_packed_command(command(*parts), check_health=False)


def _message(reply: Any) -> dict[str, Any]:
    if isinstance(reply, ErrorReply):
        raise ConnectionError(f"Redis answered the subscription: {reply}")
    if isinstance(reply, list) and len(reply) >= 2:
        head = reply[0]
        kind = head.decode() if isinstance(head, bytes) else str(head)
        return {"type": kind, "data": reply[2] if len(reply) > 2 else reply[1]}
    if reply in (b"PONG", "PONG"):  # RESP3 answers a PING as a plain reply
        return {"type": "pong", "data": b""}
    return {"type": "other", "data": reply}
