"""How verified webhook events reach the waiters of every process.

A :class:`Bus` carries each published event to the ``deliver`` callback of every process
attached to it (the publishing one included), keeps the last terminal event of each workflow
for a while so a late waiter finds it, and offers an atomic once-per-cluster ``claim``.

Invariants: ``publish`` returns True only when the event went somewhere (never acknowledge an
event that went nowhere); ``deliver`` is called synchronously on the event loop and must not
block; ``healthy`` is False while events may be missed (then waiters poll at the normal pace);
after every gap in delivery, once delivery is back, the bus awaits ``on_reconnect`` (when set)
so the events missed meanwhile can be looked up again (``last_terminal``).

Optional methods make a bus cheaper to use; the engine falls back when a bus lacks them:

- ``publish_once(event, *, terminal, mark, mark_ttl)``: check the *published mark* ``mark``,
  publish and set the mark, as one atomic step (:class:`InMemoryBus` at once; ``RedisBus``
  in one server-side script, one round trip). ``"published"``: sent now and marked;
  ``"duplicate"``: the mark was there (someone published it before), nothing sent;
  ``"in_progress"``: another call is publishing it right now (only a bus whose publish can
  await in the middle says so); ``"unsent"``: it went nowhere, no mark was set. Without it,
  the engine runs the same protocol with ``claim``/``is_claimed``/``release`` (several steps,
  a short *pending* claim guarding them).
- ``publish_once_delivered(event, *, terminal, mark, mark_ttl)``: ``publish_once`` for an event
  the caller has already handed to this process's ``deliver``: the bus does not deliver it here
  again (``RedisBus``: neither from the script's reply nor from the echo). The engine uses it
  for a terminal event that a waiter here waits for, so that waiter is woken before the bus's
  round trip.
- ``publish_once_now(event, *, terminal, mark, mark_ttl)``: ``publish_once`` answered
  synchronously, for a bus whose publish never awaits (:class:`InMemoryBus`); None when it
  cannot answer so (then ``publish_once`` is awaited). It delivers before it returns, only
  when the mark was absent (a publish that raises or goes nowhere leaves no mark), and a
  terminal event is remembered, where ``last_terminal_now`` finds it, before it is delivered;
  the engine relies on this to keep no copies of its own (see ``Registry.accept(new=True)``).
- ``last_terminal_now(workflow_ids)``: ``last_terminal`` answered synchronously, for a bus whose
  memory is local; None when it cannot answer without I/O (then ``last_terminal`` is awaited).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from ._ttl import TTLMap
from .events import REPLAY_WINDOW, WebhookEvent, event_size

__all__ = ["Bus", "Deliver", "InMemoryBus", "OnReconnect", "PublishOnce"]

Deliver = Callable[[WebhookEvent], None]
OnReconnect = Callable[[], Awaitable[None]]
"""What a bus awaits after a gap in delivery (:attr:`Bus.on_reconnect`)."""
PublishOnce = Literal["published", "duplicate", "in_progress", "unsent"]
"""What ``publish_once`` did (see the module docstring)."""


class Bus(Protocol):
    """The interface a Session uses to share events between processes."""

    on_reconnect: OnReconnect | None
    """Awaited, in a task of its own, after every gap in delivery during which events may
    have been missed, once delivery is back (RedisBus: a lost subscription). The engine sets it,
    when it is None, to look up the remembered terminal events of its waiters. A bus that never
    misses an event never calls it."""

    @property
    def healthy(self) -> bool:
        """True while every published event is sure to reach ``deliver``."""
        ...

    async def start(self, deliver: Deliver) -> None:
        """Begin calling ``deliver`` for every event published by any attached process."""
        ...

    async def publish(self, event: WebhookEvent, *, terminal: bool) -> bool:
        """Send ``event`` to every process; remember it when ``terminal``. True when sent."""
        ...

    async def claim(self, key: str, ttl: float) -> bool:
        """Atomically take ``key`` for ``ttl`` seconds: True for exactly one caller cluster-wide."""
        ...

    async def release(self, key: str) -> None:
        """Give back a claim taken with :meth:`claim` (the work it guarded did not happen)."""
        ...

    async def is_claimed(self, key: str) -> bool:
        """Is ``key`` claimed right now (by anyone)? False when that cannot be known."""
        ...

    async def last_terminal(self, workflow_ids: list[str]) -> list[WebhookEvent]:
        """The remembered terminal events of those workflows (those that have one)."""
        ...

    async def close(self) -> None:
        """Stop delivering and release connections."""
        ...


class InMemoryBus:
    """The default bus: one process, events delivered at once, state in memory.

    Claims and remembered terminal events live ``terminal_ttl`` seconds (default
    :data:`~workflows_async.events.REPLAY_WINDOW`, a week: the platform signs no timestamp, so
    a captured webhook can be replayed whenever it likes). Memory is bounded by count and by
    counted bytes: ``max_bytes`` for the remembered events (raw bodies counted) and as much
    again for the claims; past a bound the oldest entries go first. The first terminal event
    of a workflow is kept: a later one (another status) never replaces it.
    """

    def __init__(
        self,
        *,
        terminal_ttl: float = REPLAY_WINDOW,
        max_entries: int = 1_000_000,
        max_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_reconnect: OnReconnect | None = None  # never awaited: nothing is ever missed
        self._deliver: Deliver | None = None
        self._terminal: TTLMap[WebhookEvent] = TTLMap(
            terminal_ttl, max_entries, clock, max_bytes=max_bytes
        )
        self._claims: TTLMap[bool] = TTLMap(terminal_ttl, max_entries, clock, max_bytes=max_bytes)
        self._publishing: set[str] = set()  # marks whose publish is awaiting right now
        # A subclass's publish may await (or fail): then publish_once_now cannot answer.
        self._publishes_now = type(self).publish is InMemoryBus.publish

    @property
    def healthy(self) -> bool:
        return True

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, event: WebhookEvent, *, terminal: bool) -> bool:
        return self._publish_now(event, terminal)

    def _publish_now(self, event: WebhookEvent, terminal: bool) -> bool:
        if terminal:  # the first one stays
            self._terminal.add(event.workflow_id, event, size=event_size(event))
        if self._deliver is None:
            return terminal  # nobody attached: only a remembered terminal event went somewhere
        self._deliver(event)
        return True

    async def publish_once(
        self, event: WebhookEvent, *, terminal: bool, mark: str, mark_ttl: float
    ) -> PublishOnce:
        """Atomic: nothing awaits between the look at ``mark`` and setting it, unless a
        subclass's ``publish`` awaits; then concurrent copies get ``"in_progress"``."""
        outcome = self.publish_once_now(event, terminal=terminal, mark=mark, mark_ttl=mark_ttl)
        if outcome is not None:
            return outcome
        if self._claims.get(mark) is not None:
            return "duplicate"
        if mark in self._publishing:
            return "in_progress"
        self._publishing.add(mark)
        try:
            sent = await self.publish(event, terminal=terminal)
        finally:
            self._publishing.discard(mark)
        if not sent:
            return "unsent"
        self._claims.put(mark, True, mark_ttl)
        return "published"

    def publish_once_now(
        self, event: WebhookEvent, *, terminal: bool, mark: str, mark_ttl: float
    ) -> PublishOnce | None:
        """:meth:`publish_once` without awaiting; None when it cannot answer so (a subclass's
        ``publish`` may await: then await :meth:`publish_once`)."""
        if not self._publishes_now:
            return None
        claims = self._claims
        if not claims.add(mark, True, mark_ttl):
            return "duplicate"
        try:  # nothing awaits in between: the mark set first is as atomic as set after
            sent = self._publish_now(event, terminal)
        except BaseException:
            claims.pop(mark)  # not published: a retry must find no mark
            raise
        if not sent:
            claims.pop(mark)
            return "unsent"
        return "published"

    async def claim(self, key: str, ttl: float) -> bool:
        return self._claims.add(key, True, ttl)

    async def release(self, key: str) -> None:
        self._claims.pop(key)

    async def is_claimed(self, key: str) -> bool:
        return self._claims.get(key) is not None

    async def last_terminal(self, workflow_ids: list[str]) -> list[WebhookEvent]:
        return self.last_terminal_now(workflow_ids)

    def last_terminal_now(self, workflow_ids: list[str]) -> list[WebhookEvent]:
        """:meth:`last_terminal` without awaiting (the memory is local)."""
        get = self._terminal.get
        if len(workflow_ids) == 1:  # the engine's usual question, asked once per event
            event = get(workflow_ids[0])
            return [] if event is None else [event]
        return [event for wid in workflow_ids if (event := get(wid)) is not None]

    async def close(self) -> None:
        self._deliver = None
