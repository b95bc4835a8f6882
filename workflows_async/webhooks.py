"""The webhook sub-app: raw body -> verify -> parse -> publish -> 2xx, in milliseconds.

Invariants: nothing is parsed before the signature over the raw bytes holds (unless
verification is explicitly off for local development); no user code and no API call runs on
the acknowledgement path, except a signing-key fetch for a kid never seen before; a 2xx means
the event was published (or handled locally), never that it went nowhere.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import KeyUnavailableError, SignatureError, WorkflowsError
from .events import BadEventError, WebhookEvent, parse_event
from .keys import WebhookVerifier

__all__ = ["SIGNATURE_HEADER", "WebhookReceiver"]

log = logging.getLogger("workflows_async.webhooks")

SIGNATURE_HEADER = "JWS-SIGNATURE"
Publish = Callable[[WebhookEvent], Awaitable[bool]]


_ACCEPTED = json.dumps({"status": 200, "reason": "accepted"})


def _answer(status: int, reason: str) -> web.Response:
    return web.json_response({"status": status, "reason": reason}, status=status)


def _accepted() -> web.Response:
    """The same response as ``_answer(200, "accepted")``, without encoding it every time."""
    return web.Response(text=_ACCEPTED, content_type="application/json")


class WebhookReceiver:
    """Handles the platform's POSTs. ``verifier=None`` accepts unsigned events (development)."""

    def __init__(
        self,
        verifier: WebhookVerifier | None,
        publish: Publish,
        *,
        max_body: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verifier = verifier
        self._publish = publish
        self._max_body = max_body
        self._clock = clock
        self.accepted = 0
        self.rejected = 0

    def app(self) -> web.Application:
        """An aiohttp application to mount with ``app.add_subapp(prefix, ...)``."""
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post("/", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        received = self._clock()
        if request.content_length is not None and request.content_length > self._max_body:
            return self._reject(413, "body too large")
        body = await self._read_body(request)
        if body is None:
            return self._reject(413, "body too large")
        if self._verifier is not None:
            try:
                await self._verifier.verify(request.headers.get(SIGNATURE_HEADER), body)
            except SignatureError as exc:
                return self._reject(401, str(exc))
            except KeyUnavailableError as exc:
                return self._reject(503, str(exc))
            except WorkflowsError as exc:  # e.g. the Session is closing: the platform retries
                return self._reject(503, f"event not accepted now ({type(exc).__name__})")
        try:
            event = parse_event(body, received_at=received)
        except BadEventError as exc:
            return self._reject(400, str(exc))
        try:
            published = await self._publish(event)
        except WorkflowsError as exc:  # e.g. the Session is closing: the platform retries
            return self._reject(503, f"event not accepted now ({type(exc).__name__})")
        if not published:
            return self._reject(503, "event could not be published; retry later")
        self.accepted += 1
        return _accepted()

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The whole raw body, however many packets or chunks it came in; None above the limit.

        (The stream is read directly: a sub-app's own ``client_max_size`` does not apply to
        ``request.read()``, which the root application's setting governs.)"""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _reject(self, status: int, reason: str) -> web.Response:
        self.rejected += 1
        log.info("webhook refused with %s: %s", status, reason)
        return _answer(status, reason)
