"""Webhooks (and waits) for synchronous frameworks: Flask, Django sync views, any WSGI app.

Invariants: the Session lives in one event loop on one background thread, opened there and
closed there; a caller's thread only hands work over and blocks for the answer, bounded by a
timeout (a delivery that takes too long is answered 503, the platform retries); the receiving
path is :meth:`WebhookCore.receive`, exactly as for every other adapter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

from .errors import ConfigurationError, SessionClosedError
from .webhooks import WebhookAnswer, WebhookCore

if TYPE_CHECKING:
    from .session import Session

__all__ = ["BlockingWebhookReceiver"]

T = TypeVar("T")


class BlockingWebhookReceiver:
    """Runs ``session`` on a background event loop thread and receives webhooks from any thread.

    ::

        receiver = BlockingWebhookReceiver(Session(...))
        receiver.start()                              # at app start-up

        @flask_app.post("/webhooks")
        def webhooks():
            answer = receiver.receive(request.method, request.headers, request.get_data())
            return answer.body, answer.status, answer.headers

    ``run(fn)`` runs ``fn(session)`` (a coroutine function) in that loop and returns its result,
    e.g. ``receiver.run(lambda s: s.wait(workflow_id, timeout=60))``. The Session must not be
    used from any other event loop (:class:`WrongEventLoopError`). ``close()`` closes it.
    """

    def __init__(
        self, session: Session, *, read_timeout: float = 10.0, answer_timeout: float = 30.0
    ) -> None:
        if answer_timeout <= 0:
            raise ConfigurationError("answer_timeout must be positive")
        self.session = session
        self._read_timeout = read_timeout
        self._answer_timeout = answer_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._core: WebhookCore | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the loop thread and open the Session in it (attach to the bus). Idempotent."""
        with self._lock:
            if self._closed:
                raise SessionClosedError("the receiver is closed")
            if self._loop is not None:
                return
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="workflows-async-loop", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
        self.run(lambda session: session.start())
        self._core = self.session.webhook_core(read_timeout=self._read_timeout)

    def receive(self, method: str, headers: Mapping[str, str], body: bytes) -> WebhookAnswer:
        """Answer one delivery, blocking this thread until the core has answered."""
        if self._core is None:
            self.start()
        core = self._core
        assert core is not None
        # A copy: a framework's header object may not be safe to read from another thread.
        plain = {str(name): str(value) for name, value in headers.items()}
        try:
            return self._submit(core.receive(method, plain, bytes(body)), self._answer_timeout)
        except TimeoutError:
            return WebhookAnswer(503, "event not handled in time; retry later")
        except SessionClosedError:
            return WebhookAnswer(503, "event not accepted now (SessionClosedError)")

    def run(self, fn: Callable[[Session], Awaitable[T]], *, timeout: float | None = None) -> T:
        """``fn(session)`` run to completion in the Session's loop; its result or its error.
        ``timeout`` (seconds) bounds the wait here and cancels ``fn`` when it passes."""

        async def call() -> T:
            return await fn(self.session)

        return self._submit(call(), timeout)

    def _submit(self, coro: Awaitable[T], timeout: float | None) -> T:
        loop = self._loop
        if loop is None or self._closed:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise SessionClosedError("the receiver is not started, or closed")
        if threading.current_thread() is self._thread:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise ConfigurationError("called from the receiver's own loop: await it instead")

        async def wrapped() -> T:
            return await coro

        future = asyncio.run_coroutine_threadsafe(wrapped(), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("the Session's loop did not answer in time") from None

    def close(self) -> None:
        """Close the Session in its loop, then stop the loop and its thread. Idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if self._closed or loop is None or thread is None:
                self._closed = True
                return
            try:
                self.run(lambda session: session.close(), timeout=self._answer_timeout)
            finally:
                self._closed = True
                loop.call_soon_threadsafe(loop.stop)
                thread.join(self._answer_timeout)
                if not thread.is_alive():
                    loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
