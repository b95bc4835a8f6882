"""The waiting engine behind ``run_and_wait`` and ``wait``: registry + poll scheduler + bus.

Invariants: a workflow is polled only while a local waiter waits for it and the bus has not
already told us its end; every exit from a wait (result, failure, timeout, cancellation) removes
the waiter and, when it was the last one, the poll entry; closing fails every pending wait; an
error a waiter gets names its workflow (``workflow_id``); an event is acknowledged only once it
was published (or handled here); an event the in-process bus publishes synchronously
(``publish_once_now``) is recorded once, by the bus (its published mark, and its memory of the
workflow's first terminal event): the registry and the lost-webhook bookkeeping ask the bus
instead of keeping copies; ``publish_now`` answers only for a started, open engine (else None:
``publish`` starts it, or refuses a closed one); a terminal event received here while a waiter
here waits for it is delivered here before the bus's round trip where the bus can then publish
it without delivering it here again (``publish_once_delivered``, RedisBus), and is acknowledged
when the bus is down, as any event a waiter here needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ._metrics import Recorder, publish_outcome
from .bus import Bus, PublishOnce
from .errors import ConfigurationError, SessionClosedError, WorkflowsError
from .events import REPLAY_WINDOW, WebhookEvent
from .hooks import EventHooks
from .models import Channel, Workflow
from .polling import PollPolicy, PollScheduler
from .registry import Completion, Registry, workflow_from_event
from .statuses import StatusSet

__all__ = ["WaitEngine"]

log = logging.getLogger("workflows_async.waiting")

_PENDING_TTL = 10.0  # seconds a process may take to publish an event before others may
# Seconds a published event is remembered. The platform's retries last ~30 s, but it signs no
# timestamp: a captured webhook can be replayed at any time, so the mark lasts a week.
_PUBLISHED_TTL = REPLAY_WINDOW


def _closed_while_waiting(workflow_id: str) -> SessionClosedError:
    error = SessionClosedError(f"the Session was closed while waiting for workflow {workflow_id}")
    error.workflow_id = workflow_id
    return error


class WaitEngine:
    """Joins webhook events (through the bus) and polls into one answer per workflow."""

    def __init__(
        self,
        *,
        statuses: StatusSet,
        policy: PollPolicy,
        bus: Bus,
        poll: Callable[[str], Awaitable[Workflow]],
        clock: Callable[[], float] = time.monotonic,
        recorder: Recorder | None = None,
    ) -> None:
        self.statuses = statuses
        self.recorder = recorder or Recorder(clock=clock)
        self.bus = bus
        # Optional fast paths of a bus (see bus.py): atomic publish, synchronous lookup.
        self._publish_once: Callable[..., Awaitable[PublishOnce]] | None = getattr(
            bus, "publish_once", None
        )
        self._publish_once_now: Callable[..., PublishOnce | None] | None = getattr(
            bus, "publish_once_now", None
        )
        self._publish_once_delivered: Callable[..., Awaitable[PublishOnce]] | None = getattr(
            bus, "publish_once_delivered", None
        )
        self._lookup_now: Callable[[list[str]], list[WebhookEvent] | None] | None = getattr(
            bus, "last_terminal_now", None
        )
        # The event publish_once_now is delivering right now (its published mark was absent),
        # and whether its status is terminal.
        self._vouched: WebhookEvent | None = None
        self._vouched_terminal = False
        self.registry = Registry(statuses, clock=clock, remembered=self._lookup_now)
        # A wait's start (read on the Recorder's clock) may serve as its poll entry's start.
        self._one_clock = self.recorder.clock is clock
        # A terminal webhook is known to the registry (or the bus's memory): the lost-webhook
        # bookkeeping asks there instead of keeping an entry of its own per webhook.
        self.recorder.lost.ended_by_webhook = self.registry.ended
        self.hooks = EventHooks(bus.claim)
        self.scheduler = PollScheduler(
            policy,
            poll,
            statuses.is_terminal,
            self._polled_terminal,
            self._poll_failed,
            clock=clock,
            stretch_allowed=lambda: bus.healthy,
            recorder=self.recorder,
        )
        try:
            reconnect = bus.on_reconnect
        except AttributeError:  # a bus written for an older Bus protocol
            raise ConfigurationError(
                f"{type(bus).__name__} lacks the Bus protocol's on_reconnect attribute: "
                "set it to None (the Session then sets it to catch up after a gap in delivery)"
            ) from None
        if reconnect is None:  # catch up after a gap in delivery (e.g. a Redis outage)
            bus.on_reconnect = self.recheck
        self._lookups: list[tuple[str, float | None, str | None]] = []
        self._lookup_task: asyncio.Task[None] | None = None
        self._started = False
        self._start_lock = asyncio.Lock()
        self._closed = False
        self.ready = False
        """Started and not closed: a wait may register without awaiting :meth:`start` (an
        attribute, kept by ``start`` and ``close``: it is read once per wait)."""

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError("the Session is closed")

    async def start(self) -> None:
        """Attach to the bus and start the scheduler; safe to call again, also after a call
        that was cancelled half-way."""
        self._check_open()
        if self._started:
            return
        async with self._start_lock:
            self._check_open()
            if self._started:
                return
            await self.bus.start(self._deliver)
            self._check_open()  # close() may have run while the bus was starting
            self.scheduler.start()
            self._started = True
            self.ready = not self._closed

    # -- events in -------------------------------------------------------------------------

    async def publish(self, event: WebhookEvent) -> bool:
        """Called by the webhook receiver for each verified event; True means "acknowledge".

        Each event is published once for the whole bus: a *published mark* (a claim lasting
        :data:`REPLAY_WINDOW`) is set together with the publish, atomically where the bus
        offers ``publish_once`` (the in-process bus, RedisBus: one round trip), else by the
        claim protocol (:meth:`_publish_with_claims`). A copy (a platform retry, or the same
        delivery on another worker) is acknowledged only once the mark exists; while another
        call is still publishing it is refused, so the platform retries. An event is never
        acknowledged without having been published or handled here. Why an event is not
        acknowledged as new is set in ``publish_outcome`` (see :meth:`publish_now`).
        """
        if self._closed or not self._started:
            await self.start()  # raises when closed
        outcome = self.publish_now(event)
        if outcome is None:  # a bus that may await (RedisBus, a subclass), or none of that
            terminal = self.statuses.is_terminal(event.status)
            mark = "published:" + event.dedup_key
            delivered_first = self._publish_once_delivered
            if delivered_first is not None and terminal and event.workflow_id in self.registry:
                outcome = await self._publish_delivered_first(event, mark, delivered_first)
            elif self._publish_once is not None:
                sent = await self._publish_once(
                    event, terminal=terminal, mark=mark, mark_ttl=_PUBLISHED_TTL
                )
                outcome = self._settle(event, sent)
            else:
                sent = await self._publish_with_claims(event, terminal, mark)
                outcome = self._settle(event, sent)
        if outcome == "published":
            return True
        publish_outcome.set(outcome)
        return outcome == "duplicate"

    def publish_now(self, event: WebhookEvent) -> str | None:
        """:meth:`publish` without awaiting, for a started engine over a bus that publishes
        synchronously (``publish_once_now``, the in-process bus); None when it cannot answer
        so: then await :meth:`publish` (which also starts the engine, or refuses when closed).

        The answer: ``"published"`` (published now, or handled here) or ``"duplicate"`` (a
        copy, published before): acknowledge; ``"in_progress"`` (being published elsewhere)
        or ``"not_published"`` (the bus is down and nobody here needed it): retry later.
        """
        publish_once_now = self._publish_once_now
        if publish_once_now is None or self._closed or not self._started:
            return None
        terminal = self.statuses.is_terminal(event.status)
        self._vouched, self._vouched_terminal = event, terminal
        try:  # no await, no copy here: the bus remembers and marks it
            sent = publish_once_now(
                event,
                terminal=terminal,
                mark="published:" + event.dedup_key,
                mark_ttl=_PUBLISHED_TTL,
            )
        finally:
            self._vouched = None
        return None if sent is None else self._settle(event, sent)

    def _settle(self, event: WebhookEvent, sent: PublishOnce) -> str:
        """What :meth:`publish_now` answers once the bus said what it did with ``event``."""
        return sent if sent != "unsent" else self._handle_unsent(event)

    def _handle_unsent(self, event: WebhookEvent) -> str:
        # The bus is down: handle it here, and acknowledge only if someone here needed it.
        # Otherwise a 503 makes the platform retry, perhaps on a worker that can publish it.
        needed = event.workflow_id in self.registry
        self._deliver(event)
        return "published" if needed else "not_published"

    async def _publish_delivered_first(
        self,
        event: WebhookEvent,
        mark: str,
        publish: Callable[..., Awaitable[PublishOnce]],
    ) -> str:
        """A verified terminal event that a waiter here waits for, over a bus that can publish
        an event without delivering it here again (``publish_once_delivered``, RedisBus):
        deliver it here first, so the waiter does not wait for the bus's round trip, then
        publish it for the other processes. What :meth:`publish` would answer.

        Every outcome keeps :meth:`publish`'s answer: ``"published"`` and ``"duplicate"`` as
        the bus says (a copy seen here before is dropped by the registry's duplicate filter,
        hooks included); ``"unsent"`` (the bus is down) is acknowledged, as
        :meth:`_handle_unsent` does for an event a waiter here needed."""
        dispatched = self.registry.dispatched
        self._deliver(event)
        accepted = self.registry.dispatched != dispatched
        sent = await publish(event, terminal=True, mark=mark, mark_ttl=_PUBLISHED_TTL)
        # A waiter that came while the bus was publishing: the bus will not deliver the event
        # here again, and Redis may not have held it yet when the waiter looked it up.
        workflow_id = event.workflow_id
        if accepted and workflow_id in self.registry and self.registry.ended_event(event):
            self.scheduler.remove(workflow_id)
        return "published" if sent == "unsent" else sent

    async def _publish_with_claims(
        self, event: WebhookEvent, terminal: bool, mark: str
    ) -> PublishOnce:
        """``publish_once`` over a bus without it: a short *pending* claim while this process
        publishes, then the mark. A pending claim is given back when the publish fails, and
        expires soon if even that fails."""
        bus, pending = self.bus, f"event:{event.dedup_key}"
        if await bus.is_claimed(mark):
            return "duplicate"
        if not await bus.claim(pending, _PENDING_TTL):
            return "duplicate" if await bus.is_claimed(mark) else "in_progress"
        if await bus.is_claimed(mark):
            # Published between our first look and our claim (its publisher then dropped its
            # pending claim, which let ours through): a copy, not a new event.
            with contextlib.suppress(WorkflowsError, OSError):
                await bus.release(pending)
            return "duplicate"
        try:
            sent = await bus.publish(event, terminal=terminal)
        except BaseException:
            await asyncio.shield(bus.release(pending))
            raise
        if sent:
            await bus.claim(mark, _PUBLISHED_TTL)
        with contextlib.suppress(WorkflowsError, OSError):  # it expires by itself in seconds
            await bus.release(pending)
        return "published" if sent else "unsent"

    def _deliver(self, event: WebhookEvent) -> None:
        """The bus calls this for every event published by any process."""
        # Delivered by publish_once_now: its mark was absent (no copy came here before, and
        # the mark turns every later one away), and the bus remembers it if it is terminal.
        vouched = event is self._vouched
        terminal = self._vouched_terminal if vouched else self.statuses.is_terminal(event.status)
        if not self.registry.accept(event, terminal, new=vouched):
            return
        workflow_id = event.workflow_id
        self.recorder.event_delivered(workflow_id, terminal)
        self.scheduler.note_webhook()
        # Resolve its waiters (or keep it for a later one, unless the bus holds it where
        # enter() looks without I/O). Only a waited workflow has a poll entry.
        if terminal and self.registry.ended_event(event):
            self.scheduler.remove(workflow_id)
        if self.hooks:
            self.hooks.dispatch(event)

    def _polled_terminal(self, workflow_id: str, workflow: Workflow) -> None:
        self.registry.resolve(Completion(workflow, Channel.POLL), workflow_id=workflow_id)

    def _poll_failed(self, workflow_id: str, error: BaseException) -> None:
        if isinstance(error, WorkflowsError) and error.workflow_id is None:
            error.workflow_id = workflow_id  # the caller can resume with wait(workflow_id)
        self.registry.fail(workflow_id, error)

    async def recheck(self) -> None:
        """After a bus outage: look up remembered terminal events of every pending workflow."""
        pending = self.registry.pending()
        if pending:
            for event in await self.bus.last_terminal(pending):
                self._deliver(event)
        self.scheduler.expedite()

    # -- waiting ----------------------------------------------------------------------------

    async def completion(
        self, workflow_id: str, *, first_poll: float | None, definition: str | None = None
    ) -> Completion:
        """Wait (without a deadline of its own) until ``workflow_id`` ends.

        ``first_poll`` is the delay before the first poll (None: the policy's initial delay,
        or the learned plan of ``definition``, the workflow definition when known).
        """
        if self._closed or not self._started:
            await self.start()  # raises when closed
        future = self.enter(workflow_id, first_poll=first_poll, definition=definition)
        try:
            return await future
        finally:
            self.leave(workflow_id, future)

    def enter(
        self,
        workflow_id: str,
        *,
        first_poll: float | None,
        definition: str | None = None,
        started: float | None = None,
    ) -> asyncio.Future[Completion]:
        """Register a waiter of ``workflow_id``, without awaiting: the future it awaits (in its
        own frame, no coroutine of ours per wait). Every ``enter`` needs its :meth:`leave`.
        ``started``: the Recorder's clock read just now (the wait handle's ``started``); the
        poll entry then starts at that same float when the scheduler keeps the same clock.

        A remembered terminal event resolves it at once when the bus can look it up without
        I/O; otherwise one lookup task asks the bus for a batch of waiters and schedules
        their polls (so a bus fault or a slow bus only leaves them to polling)."""
        if self._closed:
            self._check_open()  # raises
        future = self.registry.register(workflow_id)
        if future.done():  # the early-event buffer had it
            return future
        lookup = self._lookup_now
        remembered = lookup([workflow_id]) if lookup is not None else None
        if remembered is None:
            self._lookups.append((workflow_id, first_poll, definition))
            if self._lookup_task is None or self._lookup_task.done():
                self._lookup_task = asyncio.get_running_loop().create_task(
                    self._look_up(), name="workflows_async bus lookups"
                )
        elif remembered:
            self._resolve_remembered(remembered)
        else:
            self.scheduler.start()  # restarts a scheduler task that died, else no-op
            self.scheduler.add(
                workflow_id,
                delay=first_poll,
                definition=definition,
                now=started if self._one_clock else None,
            )
        return future

    def leave(self, workflow_id: str, future: asyncio.Future[Completion]) -> None:
        """The waiter that :meth:`enter` gave ``future`` is gone (whatever ended it)."""
        if self.registry.unregister(workflow_id, future):
            self.scheduler.remove(workflow_id)

    def _resolve_remembered(self, events: list[WebhookEvent]) -> None:
        for event in events:
            self.registry.resolve(Completion(workflow_from_event(event), Channel.WEBHOOK, event))

    async def _look_up(self) -> None:
        """Serve queued lookups of remembered terminal events, one batch at a time; then poll
        the waiters that are still waiting."""
        while self._lookups:
            batch, self._lookups = self._lookups, []
            ids = list(dict.fromkeys(wid for wid, _, _ in batch if wid in self.registry))
            remembered: list[WebhookEvent] = []
            if ids:
                try:
                    remembered = await self.bus.last_terminal(ids)
                except Exception as exc:  # any bus's fault: polling is the truth anyway
                    log.warning(
                        "bus lookup for %d workflows failed (%s); polling",
                        len(ids),
                        type(exc).__name__,
                    )
            self._resolve_remembered(remembered)
            if self._closed:
                return
            self.scheduler.start()
            for wid, first_poll, definition in batch:
                if wid in self.registry:
                    self.scheduler.add(wid, delay=first_poll, definition=definition)

    def pending(self) -> list[str]:
        return self.registry.pending()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.ready = False
        self.registry.fail_all(_closed_while_waiting)
        self._lookups = []
        task, self._lookup_task = self._lookup_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.scheduler.close()
        await self.hooks.close()
        try:  # also when a start is half-way: the bus then stops what it began
            await self.bus.close()
        except (WorkflowsError, OSError) as exc:  # pragma: no cover - best effort
            log.warning("closing the bus failed: %s", type(exc).__name__)
