"""The production :class:`~workflows_async.bus.Bus`: Redis pub/sub plus remembered terminal events.

Invariants: ``healthy`` is True only while Redis has confirmed the subscription; after any gap in
the subscription ``reconnects`` grows and ``on_reconnect`` runs, so waiters re-read
``last_terminal``. No Redis failure escapes ``publish``, ``claim`` or ``last_terminal``. At most
``max_connections`` commands of the bus are in flight at once; a command waits for a connection
(up to ``pool_timeout``) and a local lack of connections is never taken for "Redis is down".

The bus is the commands (publishing, claims, keys) plus a reader it owns: the subscription
(connection, PING, reconnect with backoff, the ``on_reconnect`` catch-up after a gap) lives in
``_redis_reader.py``; the bus decodes what it reads and delivers it. With a URL, the webhook's
way to its waiters runs on connections the bus makes itself, from its pool's settings, instead of
through redis-py's client, whose machinery per command cost as much as the round trip:
``publish_once`` on connections of its own (``_redis_lanes.py``), the subscription on one more
(``_redis_pubsub.py``); the other commands go through the pool. With a caller's client, every
command and the subscription go through that client.

Layout in Redis, under a namespace ``ns``: every event is published on ``ns:events``; a terminal
event is also kept at ``ns:terminal:<workflow id>`` for ``terminal_ttl`` seconds; claims are
``ns:claim:<key>`` set with ``NX`` and an expiry (the value: a token of the claiming call).
``publish_once`` runs one Lua script (EVALSHA, EVAL when Redis lost its script cache): look at the
published mark (a claim key), keep a terminal event (``SET NX``: the first one stays), PUBLISH,
set the mark; atomic, one round trip. On Redis Cluster every key of a script must be in one
slot: give a hash-tagged namespace there (``namespace="{workflows}"``).
Messages are the event as msgspec JSON (the raw body travels base64-encoded, byte for byte), so
they also pass through a client that was made with ``decode_responses=True``.

``publish_once`` hands this process's own event to its ``deliver`` once: on the script's reply
or on the echo on the subscription, whichever comes first (the other is skipped), or never, for
an event the caller delivered here before publishing it (``publish_once_delivered``: the engine
wakes a local waiter of a terminal event without waiting for Redis).

When Redis cannot be reached:

- ``publish`` returns False (``publish_once``: ``"unsent"``). It does not hand the event to this
  process's own ``deliver``: the caller decides (it answers 503 so the platform retries, unless
  it resolved the waiter itself).
- ``claim`` returns True (fails open): a duplicate dispatch is better than a lost one.
- ``last_terminal`` returns ``[]``: waiters then finish by polling.

"Unreachable" means the server itself failed us: connection refused or reset, a timeout on the
socket (or of the whole command, on the bus's own connections), an error reply. When instead
this process has no free connection within ``pool_timeout`` (the bus's own limit, or the pool of
a caller's client: ``MaxConnectionsError``, or a ``BlockingConnectionPool`` that gave up
waiting), nothing reached Redis and Redis may well be fine, so nothing fails open: ``claim``
returns False (fails closed: the engine then answers 503 and the platform retries, rather than
dispatching twice), ``publish`` returns False, ``last_terminal`` returns ``[]``, and
``overloaded`` grows.

The ``redis`` package is imported only when a RedisBus is made, so ``import workflows_async``
works without it (``pip install 'workflows-async[redis]'``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import msgspec

from ._redis_lanes import Lanes
from ._redis_pubsub import LeanPubSub
from ._redis_reader import PubSub, Subscription, describe
from ._resp import command
from .bus import Deliver, OnReconnect, PublishOnce
from .errors import ConfigurationError
from .events import WebhookEvent

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBus", "mask_url"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(WebhookEvent)

_MGET_CHUNK = 1000  # keys per MGET; every chunk still goes in one pipelined round trip
_START_WAIT = 5.0  # start() waits at most this long for the first subscription attempt
_SOCKET_TIMEOUT = 3.0  # seconds a command of an owned client may wait for its reply
_POOL_RETRY = 0.01  # pause before asking an exhausted pool (of a caller's client) again
_MAX_TTL = 100 * 365 * 24 * 3600.0  # a century: Redis refuses expiry times far beyond it
_WEEK = 7 * 24 * 3600.0
# What redis-py says when its pool has no connection to give (the server was never asked):
# ``MaxConnectionsError`` (older versions: a ConnectionError with the first text), or a
# BlockingConnectionPool that waited in vain.
_POOL_LIMIT_TEXTS = frozenset({"Too many connections", "No connection available."})
_ECHOES = 1_000  # own messages awaiting their echo on the subscription, at most

# KEYS: the published mark, the terminal key. ARGV: channel, message, mark ttl (ms), "1" when
# terminal, terminal ttl (ms). Returns 0: duplicate, 1: published, 2: went nowhere.
_PUBLISH_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local terminal = ARGV[4] == '1'
if terminal then redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[5]) end
local receivers = redis.call('PUBLISH', ARGV[1], ARGV[2])
if receivers > 0 or terminal then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
  return 1
end
return 2
"""
_PUBLISH_ONCE_SHA = hashlib.sha1(_PUBLISH_ONCE.encode(), usedforsecurity=False).hexdigest()
_PUBLISH_ONCE_BYTES, _PUBLISH_ONCE_SHA_BYTES = _PUBLISH_ONCE.encode(), _PUBLISH_ONCE_SHA.encode()
_ONCE_OUTCOMES: dict[int, PublishOnce] = {0: "duplicate", 1: "published", 2: "unsent"}
_MISSING = "RedisBus needs the redis extra: pip install 'workflows-async[redis]'"


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (userinfo and ``?password=``)."""
    try:
        parts = urlsplit(url)
        masked = url
        if parts.password is not None:
            user = parts.netloc.rpartition("@")[0].split(":", 1)[0]
            hostport = parts.netloc.rpartition("@")[2]
            masked = masked.replace(parts.netloc, f"{user}:***@{hostport}", 1)
        if "password" in parts.query.lower():
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            hidden = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
            masked = masked.replace(f"?{parts.query}", f"?{urlencode(hidden, safe='*')}", 1)
        return masked
    except ValueError:
        return "<unparseable redis url>"


class _LocalLimit(Exception):
    """No connection could be had within ``pool_timeout``; Redis was not asked."""


class RedisBus:
    """A bus shared by every process attached to one Redis (see the module docstring).

    Give it a URL (the bus then owns the client and closes it) or a ``redis.asyncio.Redis``
    (left open on :meth:`close`). ``on_reconnect`` is awaited, in its own task, after every gap
    in the subscription during which events may have been missed.

    ``max_connections`` bounds the bus's commands in flight (the subscription takes one more
    connection); the rest wait, up to ``pool_timeout`` seconds, for a free one. With a URL the
    bus makes its connections: a pool for most commands and, apart from it, those of
    ``publish_once``, each with room for all of them (so up to about twice ``max_connections``
    may stay open, idle ones included); with a client the caller's pool stays as it is and only
    the bus's own use is bounded. ``terminal_ttl`` (default: 7 days) is how long the last
    terminal event of a workflow is remembered.
    """

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        namespace: str = "workflows_async",
        terminal_ttl: float = _WEEK,
        max_connections: int = 50,
        pool_timeout: float = 5.0,
        reconnect_max_delay: float = 5.0,
        ping_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_reconnect: OnReconnect | None = None,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialWithJitterBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.exceptions import NoScriptError, RedisError
        except ImportError:
            raise ConfigurationError(_MISSING) from None
        if not namespace or not isinstance(namespace, str):
            raise ConfigurationError("namespace must be a non-empty string")
        _check_ttl("terminal_ttl", terminal_ttl)
        for name, value in (
            ("pool_timeout", pool_timeout),
            ("reconnect_max_delay", reconnect_max_delay),
            ("ping_interval", ping_interval),
        ):
            if not value > 0:
                raise ConfigurationError(f"{name} must be > 0, not {value!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise ConfigurationError(f"max_connections must be an int, not {max_connections!r}")
        if max_connections < 1:
            raise ConfigurationError(f"max_connections must be >= 1, not {max_connections!r}")

        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._connection_error: type[BaseException] = RedisConnectionError
        self._no_script: type[BaseException] = NoScriptError
        if isinstance(url_or_client, str):
            self._where = mask_url(url_or_client)
            try:
                # Room for the bus's commands (``_slots`` makes the rest wait, up to
                # pool_timeout) and a spare (the subscription is not the pool's, see below):
                # the pool itself never runs out, so it need not be a BlockingConnectionPool,
                # whose every checkout takes a lock and sets a timer.
                pool = aioredis.ConnectionPool.from_url(
                    url_or_client,
                    max_connections=max_connections + 1,
                    socket_connect_timeout=2.0,
                    socket_timeout=_SOCKET_TIMEOUT,
                    # A short retry: one quick second try covers a pooled connection that went
                    # stale when Redis restarted; anything longer belongs to the caller's budget.
                    retry=Retry(ExponentialWithJitterBackoff(cap=0.05, base=0.01), 1),
                )
                self._client: Redis = aioredis.Redis.from_pool(pool)
            except ValueError as exc:
                raise ConfigurationError(f"bad Redis URL {self._where}: {exc}") from None
            self._owns_client = True
            # The webhook's way to its waiters, publish_once and the subscription, goes straight
            # to connections of the bus's own, made like the pool's (_redis_lanes.py,
            # _redis_pubsub.py); the pool serves the other commands.
            own = Lanes(pool, timeout=_SOCKET_TIMEOUT, keep=max_connections)
            lanes: Lanes | None = own
            open_pubsub: Callable[[], PubSub] = partial(LeanPubSub, own.connection)
        elif isinstance(url_or_client, aioredis.Redis):
            self._where = "<external client>"
            self._client = url_or_client
            self._owns_client = False
            lanes = None  # the caller's pool gives every connection, as its owner expects
            open_pubsub = url_or_client.pubsub
        else:
            raise ConfigurationError("RedisBus takes a redis:// URL or a redis.asyncio.Redis")

        self.namespace = namespace
        self.terminal_ttl = terminal_ttl
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        self._channel = f"{namespace}:events"
        self._lanes = lanes

        self.published = 0  # publish calls that Redis accepted
        self.delivered = 0  # events handed to ``deliver`` (own ones published: also by the caller)
        self.skipped = 0  # messages on the channel that did not decode
        self.overloaded = 0  # commands given up for want of a local connection (not Redis's fault)
        self.script_loads = 0  # publish_once sent the whole script (Redis had not cached it)

        self._deliver: Deliver | None = None
        self._closed = False
        self._reader = Subscription(
            open_pubsub,
            self._channel,
            on_message=self._on_data,
            on_gap=self._forget_echoes,
            errors=self._errors,
            where=self._where,
            ping_interval=ping_interval,
            reconnect_max_delay=reconnect_max_delay,
            read_timeout=self._client.connection_pool.connection_kwargs.get("socket_timeout"),
            clock=clock,
        )
        self._reader.on_reconnect = on_reconnect
        self._lookups: list[tuple[list[str], asyncio.Future[list[WebhookEvent]]]] = []
        self._lookup_task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max_connections)
        self._echoes: dict[bytes, bool] = {}  # messages published and delivered here already
        # Keys of events delivered here by the caller, published by another worker instead.
        self._handed: dict[str, None] = {}

    # -- the Bus protocol ----------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._reader.healthy and not self._closed

    @property
    def on_reconnect(self) -> OnReconnect | None:
        """Awaited, in its own task, after every gap in the subscription (see the Bus protocol)."""
        return self._reader.on_reconnect

    @on_reconnect.setter
    def on_reconnect(self, hook: OnReconnect | None) -> None:
        self._reader.on_reconnect = hook

    @property
    def reconnects(self) -> int:
        """Subscriptions re-established after a gap."""
        return self._reader.reconnects

    @property
    def ping_interval(self) -> float:
        return self._reader.ping_interval

    @property
    def reconnect_max_delay(self) -> float:
        return self._reader.reconnect_max_delay

    async def start(self, deliver: Deliver) -> None:
        """Subscribe and deliver in one background task; waits (briefly) for the first
        subscription. If Redis is down now, the task keeps trying: ``healthy`` says when."""
        if self._closed:
            raise RuntimeError("RedisBus is closed")
        if not self._reader.started:
            self._deliver = deliver
            self._reader.start()
        elif deliver != self._deliver:
            raise RuntimeError("RedisBus already started with another deliver callback")
        # Started already (perhaps by a call that was cancelled while waiting here): wait again.
        if not await self._reader.first_attempt(_START_WAIT):
            logger.warning("RedisBus: %s is slow to answer; subscribing in background", self._where)

    async def publish(self, event: WebhookEvent, *, terminal: bool) -> bool:
        """PUBLISH the event (and, when ``terminal``, SET it with the TTL) in one transaction.

        True when the event went somewhere: some subscriber got it, or it was remembered.
        False when Redis is unreachable or no connection was free in time (never raises)."""
        if self._closed:
            return False
        data = _encode(event)

        async def send() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                if terminal:  # NX: the first terminal event stays (terminal is final)
                    key = self._terminal_key(event.workflow_id)
                    pipe.set(key, data, nx=True, px=self._ttl_ms())
                pipe.publish(self._channel, data)
                replies: list[Any] = await pipe.execute()
                return replies

        try:
            replies = await self._call(send)
        except _LocalLimit as exc:
            self._note_overload("publish", exc)
            return False
        except self._errors as exc:
            logger.warning("RedisBus: publish to %s failed: %s", self._where, describe(exc))
            return False
        self.published += 1
        receivers = replies[-1]
        return terminal or (isinstance(receivers, int) and receivers > 0)

    async def publish_once(
        self,
        event: WebhookEvent,
        *,
        terminal: bool,
        mark: str,
        mark_ttl: float,
        delivered: bool = False,
    ) -> PublishOnce:
        """Publish ``event`` unless the claim ``mark`` exists, and then set it for ``mark_ttl``
        seconds: one atomic script, one round trip (see the module docstring).

        ``"unsent"`` when Redis is unreachable or no connection was free in time (never
        raises): no mark was set then, so a retry of the event will publish it.

        ``delivered``: this process handed ``event`` to its own ``deliver`` already (see
        :meth:`publish_once_delivered`); neither the reply nor the echo delivers it again."""
        millis = _ttl_ms("mark ttl", mark_ttl)
        if self._closed:
            return "unsent"
        data = _encode(event)
        args = (
            self._claim_key(mark).encode(),
            self._terminal_key(event.workflow_id).encode(),
            self._channel.encode(),
            data,
            b"%d" % millis,
            b"1" if terminal else b"0",
            b"%d" % self._ttl_ms(),
        )

        async def send() -> Any:
            try:
                return await self._script(_PUBLISH_ONCE_SHA_BYTES, args)
            except self._no_script:  # a new or restarted Redis: EVAL also caches it
                self.script_loads += 1
                return await self._script(None, args)

        # This process delivers its own event as soon as either the reply or the echo on the
        # subscription comes, whichever is first, and skips the other (``_once_delivered``);
        # an event ``delivered`` here already skips both. Bookkeeping slips (two copies of one
        # event sent at once from here, an echo lost in a gap) only ever cause a second
        # delivery, which the engine's duplicate filter drops.
        self._echoes[data] = delivered
        if len(self._echoes) > _ECHOES:  # echoes lost in a gap: bounded (the engine's
            del self._echoes[next(iter(self._echoes))]  # duplicate filter drops a late one)
        if delivered:
            # The same webhook may have reached another worker too, which may publish its copy
            # first ("duplicate" here): that copy, on its way here before or after the reply,
            # is skipped as the echo is. Its bytes may differ (received_at): by event key. An
            # entry no copy came for (a retry of an old event) stays until the bound drops it.
            self._handed[event.dedup_key] = None
            if len(self._handed) > _ECHOES:
                del self._handed[next(iter(self._handed))]
        outcome: PublishOnce = "unsent"
        try:
            reply = await self._call(send)
            known = _ONCE_OUTCOMES.get(reply) if isinstance(reply, int) else None
            if known is None:  # pragma: no cover - only a script other than ours says this
                logger.warning("RedisBus: publish script answered %r", reply)
            else:
                outcome = known
        except _LocalLimit as exc:
            self._note_overload("publish", exc)
        except self._errors as exc:
            logger.warning("RedisBus: publish to %s failed: %s", self._where, describe(exc))
        finally:
            if outcome != "published":  # nothing was sent, no echo comes
                self._echoes.pop(data, None)
            if delivered and outcome != "duplicate":  # no other worker's copy comes
                self._handed.pop(event.dedup_key, None)
        if outcome == "published":
            self.published += 1
            if delivered:
                self.delivered += 1  # it reached ``deliver``, from the caller's hand
            elif not self._once_delivered(data):
                self._on_decoded(event)
        return outcome

    async def publish_once_delivered(
        self, event: WebhookEvent, *, terminal: bool, mark: str, mark_ttl: float
    ) -> PublishOnce:
        """:meth:`publish_once` for an event this process has already handed to its own
        ``deliver`` (the engine does so for a verified terminal event that a waiter here
        waits for, sparing it the round trip): the other processes get it as usual, this one
        not again, neither from the reply nor from the echo on the subscription."""
        return await self.publish_once(
            event, terminal=terminal, mark=mark, mark_ttl=mark_ttl, delivered=True
        )

    async def _script(self, sha: bytes | None, args: tuple[bytes, ...]) -> Any:
        """EVALSHA ``sha`` (None: EVAL, sending the script) of ``_PUBLISH_ONCE``, 2 keys."""
        if self._lanes is not None:
            head = (b"EVALSHA", sha) if sha is not None else (b"EVAL", _PUBLISH_ONCE_BYTES)
            return await self._lanes.call(command(*head, b"2", *args))
        if sha is not None:
            return await self._client.evalsha(_PUBLISH_ONCE_SHA, 2, *args)
        return await self._client.eval(_PUBLISH_ONCE, 2, *args)

    def _once_delivered(self, data: bytes) -> bool:
        """For a message this process published with ``publish_once``: True when it was
        delivered here already (skip it now), else note that it is being delivered now."""
        seen = self._echoes.get(data)
        if seen is None:
            return False  # not ours, or its entry was dropped: deliver
        if seen:
            del self._echoes[data]
            return True
        self._echoes[data] = True
        return False

    async def claim(self, key: str, ttl: float) -> bool:
        """``SET ns:claim:<key> <token> NX PX <ttl>``: True for the one caller that set it.

        ``ttl`` is kept as given (seconds, > 0, finite). Fails open when Redis is unreachable:
        True (better a duplicate than a lost dispatch). Fails closed when no connection was
        free in time: False (Redis was not asked; the caller's work waits for a retry).

        The value is a token of this call and a GET follows in the same round trip: when
        redis-py resends the SET because the first reply was lost, the second SET finds the
        key set by the first, and the token still says the claim is ours."""
        millis = _ttl_ms("claim ttl", ttl)
        if self._closed:
            return True
        name, token = self._claim_key(key), secrets.token_hex(8)

        async def send() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(name, token, nx=True, px=millis)
                pipe.get(name)
                replies: list[Any] = await pipe.execute()
                return replies

        try:
            replies = await self._call(send)
        except _LocalLimit as exc:
            self._note_overload("claim", exc)
            return False
        except self._errors as exc:
            logger.warning("RedisBus: claim failed (%s); failing open", describe(exc))
            return True
        holder = replies[1]
        return bool(replies[0]) or holder in (token, token.encode())

    async def release(self, key: str) -> None:
        """``DEL ns:claim:<key>``: give a claim back (best effort; it expires anyway)."""
        if self._closed:
            return
        try:
            await self._call(lambda: self._client.delete(self._claim_key(key)))
        except _LocalLimit as exc:
            self._note_overload("release", exc)
        except self._errors as exc:
            logger.warning("RedisBus: releasing a claim failed (%s)", describe(exc))

    async def is_claimed(self, key: str) -> bool:
        """``EXISTS ns:claim:<key>``; False when Redis cannot say."""
        if self._closed:
            return False
        try:
            return bool(await self._call(lambda: self._client.exists(self._claim_key(key))))
        except _LocalLimit as exc:
            self._note_overload("is_claimed", exc)
            return False
        except self._errors as exc:
            logger.warning("RedisBus: checking a claim failed (%s)", describe(exc))
            return False

    async def last_terminal(self, workflow_ids: list[str]) -> list[WebhookEvent]:
        """The remembered terminal events (MGET, pipelined in chunks: one round trip).

        Calls made while a lookup is in flight are merged into the next one, so a burst of
        waits costs a few round trips and one pooled connection, not one of each per wait
        (redis-py's pool holds 100 connections and refuses the 101st).
        ``[]`` when Redis is unreachable: the waiters then rely on polling."""
        ids = list(dict.fromkeys(workflow_ids))
        if not ids or self._closed:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[WebhookEvent]] = loop.create_future()
        self._lookups.append((ids, future))
        if self._lookup_task is None or self._lookup_task.done():
            self._lookup_task = loop.create_task(self._look_up(), name="RedisBus lookups")
        return await future

    async def _look_up(self) -> None:
        """Serve queued ``last_terminal`` calls, one merged lookup at a time."""
        while self._lookups:
            batch, self._lookups = self._lookups, []
            found: dict[str, WebhookEvent] = {}
            try:
                found = await self._fetch_terminal(
                    list(dict.fromkeys(wid for ids, _ in batch for wid in ids))
                )
            except Exception as exc:  # not a Redis error (those give {}): the callers see it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            finally:  # cancelled by close(): the callers get [] rather than hang
                for ids, future in batch:
                    if not future.done():
                        future.set_result([found[wid] for wid in ids if wid in found])

    async def _fetch_terminal(self, ids: list[str]) -> dict[str, WebhookEvent]:
        keys = [self._terminal_key(wid) for wid in ids]

        async def send() -> list[list[Any]]:
            async with self._client.pipeline(transaction=False) as pipe:
                for start in range(0, len(keys), _MGET_CHUNK):
                    pipe.mget(keys[start : start + _MGET_CHUNK])
                replies: list[list[Any]] = await pipe.execute()
                return replies

        try:
            replies = await self._call(send)
        except _LocalLimit as exc:
            self._note_overload("last_terminal", exc)
            return {}
        except self._errors as exc:
            logger.warning("RedisBus: last_terminal failed: %s", describe(exc))
            return {}
        found: dict[str, WebhookEvent] = {}
        for wid, value in zip(ids, (value for reply in replies for value in reply), strict=False):
            if value is None:
                continue
            event = _decode(value)
            if event is None:
                logger.warning("RedisBus: skipping an undecodable remembered terminal event")
            else:
                found[wid] = event
        return found

    async def close(self) -> None:
        """Stop the reader (it unsubscribes and closes its connection), then the owned client."""
        if self._closed:
            return
        self._closed = True
        self._deliver = None
        lookup, self._lookup_task = self._lookup_task, None
        if lookup is not None:
            lookup.cancel()
        await self._reader.close()  # also returns a start() still waiting for it
        if self._lanes is not None:
            await self._lanes.close()
        if lookup is not None:
            await asyncio.wait([lookup])
        for _, future in self._lookups:  # queued behind a lookup that close() cancelled
            if not future.done():
                future.set_result([])
        self._lookups = []
        if self._owns_client:
            try:
                await self._client.aclose()
            except self._errors as exc:  # pragma: no cover - closing a dead pool
                logger.debug("RedisBus: closing the client: %s", describe(exc))

    # -- what the reader hands over ----------------------------------------------------------

    def _on_data(self, data: object) -> None:
        key = data.encode() if isinstance(data, str) else data
        if isinstance(key, bytes) and self._once_delivered(key):
            return  # our own publish_once, delivered here already
        event = _decode(data)
        if self._handed and event is not None and event.dedup_key in self._handed:
            del self._handed[event.dedup_key]  # another worker's copy of an event handed to
            self.delivered += 1  # ``deliver`` here already (publish_once_delivered)
            return
        if event is None:
            self.skipped += 1
            size = len(data) if isinstance(data, bytes | str) else 0
            logger.warning("RedisBus: skipping an undecodable message (%d bytes)", size)
            return
        self._on_decoded(event)

    def _on_decoded(self, event: WebhookEvent) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        self.delivered += 1
        try:
            deliver(event)
        except Exception:
            logger.exception("RedisBus: deliver failed for workflow %s", event.workflow_id)

    def _forget_echoes(self) -> None:
        """After a gap: the echoes of it are lost (or, if not, filtered downstream)."""
        self._echoes.clear()
        self._handed.clear()

    # -- commands under the connection limit ---------------------------------------------------

    async def _call(self, command: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``command`` (one Redis round trip) in one of ``max_connections`` slots.

        Waits up to ``pool_timeout`` for a slot and, while a pool says it has no connection to
        give (nothing was sent then, so asking again is safe), for a connection; raises
        :class:`_LocalLimit` when that time is up. Errors of Redis itself pass through."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pool_timeout
        if self._slots.locked():  # else acquire() returns at once: no timer for the usual case
            try:
                async with asyncio.timeout_at(deadline):
                    await self._slots.acquire()
            except TimeoutError:
                raise _LocalLimit(f"{self.max_connections} commands in flight") from None
        else:
            await self._slots.acquire()
        try:
            while True:
                try:
                    return await command()
                except self._errors as exc:
                    if not self._is_pool_limit(exc):
                        raise
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise _LocalLimit(describe(exc)) from exc
                    await asyncio.sleep(min(_POOL_RETRY, remaining))
        finally:
            self._slots.release()

    def _is_pool_limit(self, exc: BaseException) -> bool:
        """Did a connection pool refuse us a connection (rather than Redis fail us)?"""
        return type(exc).__name__ == "MaxConnectionsError" or (
            isinstance(exc, self._connection_error) and str(exc) in _POOL_LIMIT_TEXTS
        )

    def _note_overload(self, what: str, exc: _LocalLimit) -> None:
        self.overloaded += 1
        logger.warning(
            "RedisBus: %s not done: no free connection within %.1fs (%s); Redis may be fine,"
            " so this is not failing open",
            what,
            self.pool_timeout,
            exc,
        )

    # -- small helpers -------------------------------------------------------------------------

    def _terminal_key(self, workflow_id: str) -> str:
        return f"{self.namespace}:terminal:{workflow_id}"

    def _claim_key(self, key: str) -> str:
        return f"{self.namespace}:claim:{key}"

    def _ttl_ms(self) -> int:
        return _ttl_ms("terminal_ttl", self.terminal_ttl)

    def __repr__(self) -> str:
        target = f"url={self._where!r}" if self._owns_client else "client=<external>"
        return (
            f"RedisBus({target}, namespace={self.namespace!r}, healthy={self.healthy},"
            f" closed={self._closed})"
        )


def _check_ttl(name: str, ttl: float) -> None:
    if not 0 < ttl <= _MAX_TTL:  # also refuses NaN
        raise ConfigurationError(f"{name} must be > 0 seconds and at most a century, not {ttl!r}")


def _ttl_ms(name: str, ttl: float) -> int:
    """``ttl`` seconds as Redis PX milliseconds, kept as given (rounded up to a whole ms)."""
    _check_ttl(name, ttl)
    return max(1, math.ceil(ttl * 1000))


def _decode(data: object) -> WebhookEvent | None:
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, bytes):
        return None
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None
