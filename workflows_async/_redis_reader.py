"""RedisBus's subscription (private): one pub/sub connection on one channel, kept alive.

Invariants: ``healthy`` is True only from Redis confirming SUBSCRIBE until the first sign that
the connection is gone (an error, or silence past a PING). ``on_message`` gets the data of every
message, in the order Redis sent them, synchronously on the event loop, from the one reader
task; an exception it raises is logged and reading goes on. After every gap in the subscription
(a lost connection, or one that redis-py made again underneath) ``reconnects`` grows,
``on_gap`` is called and ``on_reconnect`` is awaited in a task of its own, once the
subscription is confirmed again: pub/sub keeps nothing for an absent subscriber, so catching up
(re-reading what is remembered elsewhere) is the owner's business. Only :meth:`close` ends the
reader; any failure means: close the connection, wait (a doubling, jittered delay capped by
``reconnect_max_delay``), subscribe again.

Reading blocks on the socket (``get_message(timeout=None)``): no timer is set and cancelled per
message, nothing wakes up while all is quiet. Health is watched by one timer per quiet spell, not
per message: after ``ping_interval`` seconds without a word from Redis it interrupts the read,
the reader sends PING (from its own task: never alongside a read), and reads on; when still
nothing, not even the PONG, has come ``ping_interval`` after the PING, the connection counts as
dead. Interrupting a read is safe: redis-py's parser keeps what it had read and resumes (the same
happens at every timeout of ``get_message(timeout=...)``). redis-py versions without the fix of
redis-py#4098 end a blocking read at the connection's ``socket_timeout`` (5 s by default since
8.0): given that as ``read_timeout``, the reader PINGs after two thirds of it at the latest.
``clock`` only times outages for the logs; the watch runs on the event loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .bus import OnReconnect

__all__ = ["PubSub", "Subscription", "describe"]

# The bus's logger: these messages are about the bus, and users filter on its name.
logger = logging.getLogger("workflows_async.redis_bus")

_BACKOFF_BASE = 0.05  # first reconnect delay, doubled per failed attempt up to the cap
_UNSUBSCRIBE_WAIT = 0.5  # close() unsubscribes politely, but waits no longer than this


class PubSub(Protocol):
    """The part of ``redis.asyncio.client.PubSub`` the reader uses (tests give it a fake).

    ``connection`` is None before the first command, else an object with ``is_connected``."""

    connection: Any

    async def subscribe(self, *args: Any, **kwargs: Any) -> Any: ...

    async def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> Any: ...

    def ping(self, message: Any = None) -> Awaitable[Any]: ...

    def unsubscribe(self, *args: Any) -> Awaitable[Any]: ...

    async def aclose(self) -> None: ...


class Subscription:
    """Keeps one subscription to ``channel`` alive in one task (see the module docstring).

    ``open_pubsub`` makes a fresh, unconnected pub/sub object for each attempt; ``errors``
    are the exceptions that mean "Redis failed us" (logged briefly, then reconnect); ``where``
    names the server in logs and must hold no secret.
    """

    def __init__(
        self,
        open_pubsub: Callable[[], PubSub],
        channel: str,
        *,
        on_message: Callable[[Any], None],
        on_gap: Callable[[], None],
        errors: tuple[type[BaseException], ...],
        where: str,
        ping_interval: float,
        reconnect_max_delay: float,
        read_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.ping_interval = ping_interval
        # Silence allowed before a PING (see the module docstring about read_timeout).
        self.quiet = ping_interval if not read_timeout else min(ping_interval, read_timeout * 2 / 3)
        self.reconnect_max_delay = reconnect_max_delay
        self.on_reconnect: OnReconnect | None = None
        self.reconnects = 0  # subscriptions re-established after a gap
        self.pings = 0  # PINGs sent after a quiet spell
        self._open = open_pubsub
        self._on_message = on_message
        self._on_gap = on_gap
        self._errors = errors
        self._unsubscribe_errors: tuple[type[BaseException], ...] = (*errors, TimeoutError)
        self._where = where
        self._clock = clock
        self._healthy = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._hooks: set[asyncio.Task[None]] = set()
        self._first_attempt = asyncio.Event()
        self._heard = 0.0  # loop time of the last message of any kind from Redis
        self._pinged: float | None = None  # loop time of a PING still waiting for an answer
        self._timer: asyncio.TimerHandle | None = None  # the watch over the current read

    @property
    def healthy(self) -> bool:
        return self._healthy and not self._closed

    @property
    def started(self) -> bool:
        return self._task is not None or self._closed

    def start(self) -> None:
        """Start the reader task (once; later calls do nothing)."""
        if self._closed:
            raise RuntimeError("the subscription is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"RedisBus reader {self.channel}")

    async def first_attempt(self, timeout: float) -> bool:
        """Wait until the first attempt to subscribe has ended, either way (or :meth:`close`
        ran). False when ``timeout`` seconds passed first."""
        try:
            await asyncio.wait_for(self._first_attempt.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop reading: unsubscribe (briefly), close the connection, cancel running
        ``on_reconnect`` calls. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._healthy = False
        self._first_attempt.set()  # a first_attempt() still waiting returns now
        tasks = [t for t in (self._task, *self._hooks) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- the reader task -----------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        gap = False  # True once messages may have been missed since start()
        lost_at = 0.0
        while True:
            pubsub = self._open()
            try:
                await self._subscribe(pubsub)
                self._healthy = True
                self._first_attempt.set()
                if gap:
                    outage = self._clock() - lost_at
                    self._note_gap(f"re-subscribed to {self._where} after {outage:.1f}s")
                attempt = 0
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except self._errors as exc:  # TimeoutError is an OSError: a silent peer lands here
                level = logging.INFO if gap else logging.WARNING
                logger.log(level, "RedisBus: subscription lost: %s", describe(exc))
            except Exception:
                logger.exception("RedisBus: unexpected error in the reader; re-subscribing")
            finally:
                self._healthy = False
                await self._discard(pubsub)
            if not gap:
                gap, lost_at = True, self._clock()
            self._first_attempt.set()
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1

    async def _subscribe(self, pubsub: PubSub) -> None:
        """SUBSCRIBE and wait for Redis to confirm it (only then is ``healthy`` true)."""
        await pubsub.subscribe(self.channel)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.ping_interval
        while (remaining := deadline - loop.time()) > 0:
            message = await pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "subscribe":
                return
        raise TimeoutError("Redis did not confirm the subscription")

    async def _read(self, pubsub: PubSub) -> None:
        """Hand over messages until the connection fails, or stays silent past a PING."""
        loop = asyncio.get_running_loop()
        self._heard, self._pinged = loop.time(), None
        while True:
            try:
                async with asyncio.timeout(None) as watch:
                    self._watch(loop, watch)
                    while True:
                        message = await pubsub.get_message(timeout=None)
                        self._heard = loop.time()
                        if message is not None:
                            self._handle(message)
            except TimeoutError:
                if not watch.expired():
                    raise  # not the watch's: the connection's own (a socket timeout)
            finally:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            if self._pinged is not None and self._heard < self._pinged:
                raise TimeoutError(f"no PONG within {self.ping_interval:.1f}s")
            await pubsub.ping()
            self.pings += 1
            self._pinged = loop.time()

    def _watch(self, loop: asyncio.AbstractEventLoop, watch: asyncio.Timeout) -> None:
        """Timer callback: end ``watch`` (the read) when Redis has been quiet for too long,
        else look again when it would be. A word from Redis answers a PING."""
        now = loop.time()
        if self._pinged is not None and self._heard >= self._pinged:
            self._pinged = None
        if self._pinged is None:
            due = self._heard + self.quiet
        else:  # look again within ``quiet``: once answered, silence is timed from the answer
            due = min(self._pinged + self.ping_interval, now + self.quiet)
        if now >= due:
            self._timer = None
            watch.reschedule(now)  # expires at once: the read is interrupted
        else:
            self._timer = loop.call_at(due, self._watch, loop, watch)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message":
            try:
                self._on_message(message.get("data"))
            except Exception:
                logger.exception("RedisBus: handling a message failed")
        elif kind == "subscribe":
            # redis-py reconnected this connection by itself and replayed SUBSCRIBE: a gap.
            self._note_gap(f"{self._where} reconnected underneath; re-subscribed")

    def _note_gap(self, what: str) -> None:
        self.reconnects += 1
        logger.info("RedisBus: %s", what)
        self._on_gap()
        hook = self.on_reconnect
        if hook is not None:
            task = asyncio.create_task(_call_hook(hook), name="RedisBus on_reconnect")
            self._hooks.add(task)
            task.add_done_callback(self._hooks.discard)

    async def _discard(self, pubsub: PubSub) -> None:
        """Close the subscription connection; on close(), unsubscribe politely first."""
        connection = pubsub.connection
        if self._closed and connection is not None and connection.is_connected:
            with contextlib.suppress(*self._unsubscribe_errors):
                await asyncio.wait_for(pubsub.unsubscribe(), _UNSUBSCRIBE_WAIT)
        try:
            await pubsub.aclose()
        except self._errors as exc:
            logger.debug("RedisBus: closing the subscription: %s", describe(exc))

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.reconnect_max_delay, _BACKOFF_BASE * 2.0 ** min(attempt, 30))
        return ceiling * (0.5 + random.random() / 2)


def describe(exc: BaseException) -> str:
    """``Type: text`` of an exception, for a log line (the text holds no secret of ours)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _call_hook(hook: OnReconnect) -> None:
    try:
        await hook()
    except Exception:
        logger.exception("RedisBus: on_reconnect failed")
