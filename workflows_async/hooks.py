"""Event hooks: user callbacks for every verified webhook event, run off the acknowledgement path.

Invariants: a callback never runs inside the webhook request; a slow or failing callback delays
or breaks nothing else (each call is its own task, at most ``max_concurrency`` at once and at
most ``max_pending`` waiting, beyond which calls are skipped and logged; a failure is logged
with the workflow id only); a ``once=True`` hook runs at most once per event across every
process sharing the bus, for ``claim_ttl`` seconds (a week by default: a replay of a captured
webhook within that window runs no once-hook again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable

from .errors import ConfigurationError
from .events import REPLAY_WINDOW, WebhookEvent

__all__ = ["EventCallback", "EventHooks"]

log = logging.getLogger("workflows_async.hooks")

EventCallback = Callable[[WebhookEvent], Awaitable[None] | None]
Claim = Callable[[str, float], Awaitable[bool]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Hook:
    callback: EventCallback
    once: bool
    name: str


class EventHooks:
    """Registered callbacks and the tasks running them."""

    def __init__(
        self,
        claim: Claim,
        *,
        max_concurrency: int = 100,
        max_pending: int = 10_000,
        claim_ttl: float = REPLAY_WINDOW,
    ) -> None:
        self._hooks: list[_Hook] = []
        self._claim = claim
        self._claim_ttl = claim_ttl
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_pending = max_pending
        self.failures = 0
        self.dropped = 0
        """Hook calls skipped because ``max_pending`` calls were already waiting or running."""

    def add(self, callback: EventCallback, *, once: bool = False, name: str | None = None) -> None:
        """Register ``callback``. A ``once`` hook's ``name`` keys its cluster-wide claim: it
        defaults to ``module.qualname`` and must be unique among once-hooks."""
        module = getattr(callback, "__module__", None) or ""
        qualname = getattr(callback, "__qualname__", None) or type(callback).__qualname__
        label = name or f"{module}.{qualname}"
        if once and any(hook.once and hook.name == label for hook in self._hooks):
            raise ConfigurationError(
                f"another once=True hook is named {label!r}; pass a distinct name= "
                "(it keys the claim that makes the hook run once per event)"
            )
        self._hooks.append(_Hook(callback, once, label))

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def dispatch(self, event: WebhookEvent) -> None:
        """Schedule every hook for ``event``; returns at once."""
        loop = asyncio.get_running_loop()
        for hook in self._hooks:
            if len(self._tasks) >= self._max_pending:  # hooks far slower than the webhooks
                self.dropped += 1
                log.warning(
                    "event hook %s skipped for workflow %s: %d hook calls pending",
                    hook.name,
                    event.workflow_id,
                    len(self._tasks),
                )
                continue
            task = loop.create_task(self._run(hook, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, hook: _Hook, event: WebhookEvent) -> None:
        async with self._slots:
            try:
                if hook.once and not await self._claim(
                    f"hook:{hook.name}:{event.dedup_key}", self._claim_ttl
                ):
                    return
                outcome = hook.callback(event)
                if inspect.isawaitable(outcome):
                    await outcome
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.warning(
                    "event hook %s failed for workflow %s: %s",
                    hook.name,
                    event.workflow_id,
                    type(exc).__name__,
                )

    async def drain(self) -> None:
        """Wait for the running hooks to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
