"""Webhook delivery: one signed event per status change, POSTed to every webhook URL with retries.

Invariants: every fault decision for an event (drop, duplicate, signature) is made once, when
the event is submitted, and holds for every URL and every retry; at most ``concurrency`` HTTP
attempts are in flight at once (waiting between retries holds no slot); every task this module
starts is tracked and cancelled and awaited by `close`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from ._faults import Dice, Faults
from ._records import Outcome, RecordLog, WebhookAttempt
from ._signing import KeyRing, generate_signing_key, sign_webhook
from ._state import Transition
from ._wire import encode, event_type, iso8601

__all__ = ["WebhookDispatcher"]

_log = logging.getLogger(__name__)

Signature = Literal["valid", "bad_signature", "unknown_kid"]


@dataclass(slots=True)
class _Event:
    event_id: str
    workflow_id: str
    status: str
    body: bytes
    urls: tuple[str, ...]
    copies: int
    signature: Signature
    delay: float


class WebhookDispatcher:
    """Turns transitions into signed deliveries; see the module invariants."""

    def __init__(
        self,
        *,
        keys: KeyRing,
        faults: Callable[[], Faults],
        dice: Dice,
        urls: Callable[[], Sequence[str]],
        on_change: Callable[[], None],
        timeout: float,
        retry_interval: float,
        retries: int,
        concurrency: int = 100,
        log_limit: int | None = None,
    ) -> None:
        self._keys, self._faults, self._dice, self._urls = keys, faults, dice, urls
        self._on_change = on_change
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry_interval, self._retries = retry_interval, retries
        self._concurrency = concurrency
        self._semaphore: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[str, list[_Event]] = {}
        self._rogue: RSAPrivateKey | None = None  # a key never served, made on first need
        self.attempts: list[WebhookAttempt] = RecordLog(log_limit)
        self.sent = 0
        self.delivered = 0

    @property
    def busy(self) -> bool:
        """Deliveries are running or waiting."""
        return bool(self._tasks)

    async def start(self) -> None:
        self._semaphore = asyncio.Semaphore(self._concurrency)
        connector = aiohttp.TCPConnector(limit=self._concurrency)
        self._session = aiohttp.ClientSession(connector=connector)

    def cancel(self) -> None:
        """Cancel every delivery (used at shutdown, before waiting for request handlers)."""
        for task in self._tasks:
            task.cancel()

    async def close(self) -> None:
        while self._tasks:  # a delivery spawned while closing is cancelled in the next round
            self.cancel()
            await asyncio.wait(list(self._tasks))  # a gather loop here hung on Python 3.13.0
        self._held.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def submit(self, transition: Transition) -> asyncio.Task[None] | None:
        """Announce ``transition``; the task delivering it, if one starts now."""
        urls = tuple(self._urls())
        if not urls or self._session is None:
            return None
        faults, dice = self._faults(), self._dice
        event = self._make_event(transition, urls, faults)
        dropped = dice.chance(faults.drop_webhooks)
        if dropped:
            for url in urls:
                self._record(url, event, 0, "dropped", duplicate=False)
        held = self._held.get(transition.workflow_id)
        if faults.out_of_order or held is not None:
            held = self._held.setdefault(transition.workflow_id, [])
            if not dropped:
                held.append(event)
            if not transition.final:
                return None
            del self._held[transition.workflow_id]
            return self._spawn(self._deliver_all(held[::-1]))
        return None if dropped else self._spawn(self._deliver_all([event]))

    def _make_event(self, transition: Transition, urls: tuple[str, ...], faults: Faults) -> _Event:
        event_id = str(uuid.uuid4())
        fields: dict[str, Any] = {
            "eventId": event_id,
            "eventType": event_type(transition.status, final=transition.final),
            "workflowId": transition.workflow_id,
            "caseId": transition.case_id,
            "recordId": transition.record_id,
            "status": transition.status,
            "timestamp": iso8601(transition.at),
        }
        body = encode({k: v for k, v in fields.items() if v is not None})
        dice = self._dice
        copies = 2 if dice.chance(faults.duplicate_webhooks) else 1
        signature: Signature = "valid"
        if dice.chance(faults.bad_signature_rate):
            signature = "bad_signature"
        elif dice.chance(faults.unknown_kid_rate):
            signature = "unknown_kid"
        return _Event(
            event_id=event_id,
            workflow_id=transition.workflow_id,
            status=transition.status,
            body=body,
            urls=urls,
            copies=copies,
            signature=signature,
            delay=faults.webhook_delay,
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.error("webhook delivery failed unexpectedly", exc_info=error)
        self._on_change()

    async def _deliver_all(self, events: list[_Event]) -> None:
        for event in events:
            if event.delay > 0:
                await asyncio.sleep(event.delay)
            header = self._sign(event)
            for copy in range(event.copies):
                await asyncio.gather(
                    *(self._deliver(url, event, header, copy > 0) for url in event.urls)
                )

    def _sign(self, event: _Event) -> str:
        if event.signature == "valid":
            return self._keys.sign(event.body)
        if self._rogue is None:
            self._rogue = generate_signing_key()
        kid = self._keys.kid if event.signature == "bad_signature" else str(uuid.uuid4())
        return sign_webhook(event.body, self._rogue, kid)

    async def _deliver(self, url: str, event: _Event, header: str, duplicate: bool) -> None:
        assert self._semaphore is not None
        for attempt in range(1, self._retries + 2):
            async with self._semaphore:
                outcome = await self._post(url, event.body, header)
            self.sent += 1
            if self._record(url, event, attempt, outcome, duplicate=duplicate).ok:
                self.delivered += 1
                return
            if attempt <= self._retries:
                await asyncio.sleep(self._retry_interval)

    def _record(
        self, url: str, event: _Event, attempt: int, outcome: Outcome, *, duplicate: bool
    ) -> WebhookAttempt:
        record = WebhookAttempt(
            url=url,
            event_id=event.event_id,
            workflow_id=event.workflow_id,
            status=event.status,
            attempt=attempt,
            outcome=outcome,
            time=time.time(),
            duplicate=duplicate,
            signature=event.signature,
        )
        self.attempts.append(record)
        self._on_change()  # wakes `Simulator.wait_for_webhooks`
        return record

    async def _post(self, url: str, body: bytes, header: str) -> Outcome:
        assert self._session is not None
        headers = {"Content-Type": "application/json", "JWS-SIGNATURE": header}
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=self._timeout
            ) as response:
                await response.read()
                return response.status
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError):
            return "error"
