"""Futures by workflow id: the meeting point of webhooks, polls and waiters.

Invariants: the first terminal status for a workflow wins and resolves every local waiter of it
exactly once; a terminal event that arrives before anyone waits is kept (bounded, with a
time-to-live) and resolves the waiter at registration, unless the bus remembers it where the
engine looks without I/O (the in-process bus): then the bus's memory is the only copy; a
duplicate event (same event id, or same workflow and status) is dispatched once; a terminal
status is final: once a workflow is known terminal here (or, for an event a bus vouches for,
in that bus's memory), no later event for it (a replay, another status) is dispatched; every
buffer is bounded by count and by counted bytes (raw bodies included); a waiter that leaves
removes every trace of itself; a completion is built only when someone waits for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from ._ttl import TTLMap
from .events import REPLAY_WINDOW, WebhookEvent, event_size
from .models import Channel, Workflow
from .statuses import StatusSet

__all__ = ["Completion", "Registry"]


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """How a workflow finished: its final state and the channel that told us first."""

    workflow: Workflow
    channel: Channel
    event: WebhookEvent | None = None


_Waiters = asyncio.Future[Completion] | list[asyncio.Future[Completion]]


def _listed(held: _Waiters | None) -> list[asyncio.Future[Completion]]:
    """The waiters of a workflow as a list, however they are held."""
    if held is None:
        return []
    return held if isinstance(held, list) else [held]


def workflow_from_event(event: WebhookEvent) -> Workflow:
    return Workflow(id=event.workflow_id, case_id=event.case_id, status=event.status)


class Registry:
    """Local waiters by workflow id, the early-event buffer and the duplicate filter."""

    def __init__(
        self,
        statuses: StatusSet,
        *,
        early_ttl: float = 600.0,
        early_max: int = 10_000,
        early_max_bytes: int = 64 << 20,
        dedup_ttl: float = REPLAY_WINDOW,
        dedup_max: int = 1_000_000,
        dedup_max_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
        remembered: Callable[[list[str]], list[WebhookEvent] | None] | None = None,
    ) -> None:
        self.statuses = statuses
        # The bus's synchronous memory of first terminal events (``last_terminal_now``), if any.
        self._remembered = remembered
        # workflow id -> its one waiter's future, or a list when several wait (one future, the
        # usual case, costs no list: ~70 bytes less per pending wait)
        self._waiters: dict[str, _Waiters] = {}
        self._early: TTLMap[WebhookEvent] = TTLMap(
            early_ttl, early_max, clock, max_bytes=early_max_bytes
        )
        self._seen: TTLMap[bool] = TTLMap(dedup_ttl, dedup_max, clock, max_bytes=dedup_max_bytes)
        # workflow id -> its first terminal status: later events for it are not dispatched
        self._final: TTLMap[str] = TTLMap(dedup_ttl, dedup_max, clock, max_bytes=dedup_max_bytes)
        self._any_final = False  # anything put in _final yet (never, over the in-process bus)
        # The event accept(new=True) last found remembered by the bus: ended_event, which the
        # engine calls for it next, need not ask the bus again.
        self._remembered_event: WebhookEvent | None = None
        self.dispatched = 0
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._waiters)

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._waiters

    def pending(self) -> list[str]:
        return list(self._waiters)

    def register(self, workflow_id: str) -> asyncio.Future[Completion]:
        """A future resolved when ``workflow_id`` reaches a terminal status."""
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        early = self._early.pop(workflow_id)
        if early is not None:
            future.set_result(Completion(workflow_from_event(early), Channel.WEBHOOK, early))
            return future
        held = self._waiters.get(workflow_id)
        if held is None:
            self._waiters[workflow_id] = future
        elif isinstance(held, list):
            held.append(future)
        else:
            self._waiters[workflow_id] = [held, future]
        return future

    def unregister(self, workflow_id: str, future: asyncio.Future[Completion]) -> bool:
        """Forget ``future``; True when no local waiter of ``workflow_id`` remains."""
        held = self._waiters.get(workflow_id)
        if held is None:
            return True
        if isinstance(held, list):
            if future in held:
                held.remove(future)
            if held:
                return False
        elif held is not future:
            return False  # another waiter of the workflow is still here
        del self._waiters[workflow_id]
        return True

    def _take(self, workflow_id: str) -> list[asyncio.Future[Completion]]:
        """Remove and return every waiter of ``workflow_id`` (empty when none)."""
        return _listed(self._waiters.pop(workflow_id, None))

    def accept(
        self, event: WebhookEvent, terminal: bool | None = None, *, new: bool = False
    ) -> bool:
        """Filter duplicates: True the first time an event is seen here, and never for an event
        about a workflow already known terminal here (its first terminal status is final).

        ``terminal``: whether the event's status is terminal, when the caller knows already.
        ``new``: a bus vouches for the event (``publish_once_now``): no copy of it reached this
        registry before and none can later (its *published mark*, as long-lived as this
        filter, guards every way in), and the bus remembers a workflow's first terminal event
        before delivering anything. Then nothing is looked up or recorded here: the workflow
        ended before iff the bus remembers another terminal event of it."""
        workflow_id = event.workflow_id
        if self._any_final and self._final.get(workflow_id) is not None:
            self.duplicates += 1
            return False
        if new and self._remembered is not None:
            first = self._remembered([workflow_id])
            if first is not None:  # the bus answered
                if first:
                    if first[0] is not event:
                        self.duplicates += 1
                        return False
                    self._remembered_event = event
                self.dispatched += 1
                return True
        if not (new or self._seen.add(event.dedup_key, True)):
            self.duplicates += 1
            return False
        if terminal is None:
            terminal = self.statuses.is_terminal(event.status)
        if terminal:
            self._final.put(workflow_id, event.status, size=len(event.status))
            self._any_final = True
        self.dispatched += 1
        return True

    def ended(self, workflow_id: str) -> bool:
        """Has a terminal event of ``workflow_id`` been accepted (within the replay window)?"""
        if self._final.get(workflow_id) is not None:
            return True
        return bool(self._remembered([workflow_id])) if self._remembered is not None else False

    def deliver(self, event: WebhookEvent, terminal: bool | None = None) -> bool:
        """Resolve waiters with a terminal event, or keep it for a later waiter (see
        :meth:`ended_event`). Returns True when the event was terminal."""
        if terminal is None:
            terminal = self.statuses.is_terminal(event.status)
        if terminal:
            self.ended_event(event)
        return terminal

    def ended_event(self, event: WebhookEvent) -> bool:
        """``event`` (terminal) ends its workflow: resolve its waiters (the completion is built
        only then), or keep it for a later one, unless the bus remembers a terminal event of
        the workflow where a later waiter finds it without I/O (the in-process bus). True
        when someone waited."""
        workflow_id = event.workflow_id
        known = event is self._remembered_event  # accept() saw the bus remember it just now
        self._remembered_event = None
        held = self._waiters.pop(workflow_id, None)
        if held is None:
            remembered = self._remembered
            if not known and (remembered is None or not remembered([workflow_id])):
                self._early.put(workflow_id, event, size=event_size(event))
            return False
        completion = Completion(workflow_from_event(event), Channel.WEBHOOK, event)
        for future in _listed(held):
            if not future.done():
                future.set_result(completion)
        return True

    def resolve(self, completion: Completion, *, workflow_id: str | None = None) -> bool:
        """Resolve every waiter of the workflow (``workflow_id``, by default the completion's
        own); False when nobody waits for it."""
        futures = self._take(workflow_id or completion.workflow.id)
        if not futures:
            return False
        for future in futures:
            if not future.done():
                future.set_result(completion)
        return True

    def fail(self, workflow_id: str, error: BaseException) -> None:
        """Fail every waiter of one workflow (e.g. the API says it does not exist)."""
        for future in self._take(workflow_id):
            if not future.done():
                future.set_exception(error)

    def fail_all(self, error_for: Callable[[str], BaseException]) -> None:
        """Fail every pending waiter (the Session is closing), each workflow's waiters with
        ``error_for(workflow_id)``: one exception object never names two workflows."""
        waiters, self._waiters = self._waiters, {}
        for workflow_id, held in waiters.items():
            error = error_for(workflow_id)
            for future in _listed(held):
                if not future.done():
                    future.set_exception(error)
