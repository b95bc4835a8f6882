"""The webhook sub-app: raw body -> verify -> parse -> publish -> 2xx, in milliseconds.

Invariants: nothing is parsed before the signature over the raw bytes holds (unless
verification is explicitly off for local development), and a request without a well-formed
signature header is refused before its body is read; a body is read within ``read_timeout``
seconds or refused (408) and its connection closed; no user code and no API call runs on the
acknowledgement path, except a signing-key fetch for a kid never seen before; a 2xx means the
event was published (or handled locally), never that it went nowhere; the endpoint never
answers 500: any unexpected error becomes a 503 (the platform retries) with a short reason and
a log line that names the error type only, never body content.

Answers: 200 accepted (also a duplicate or a replay, acknowledged without effect); 400 body not
a usable event, or not readable (broken chunking, connection trouble); 401 signature missing,
malformed, of a disallowed algorithm, or not matching, or key refused for good; 405 not a POST;
408 body not received within ``read_timeout``; 413 body over ``max_body``; 503 retry later
(signing key not published yet, key fetch budget spent or key endpoint down, bus down, Session
closing, or an unexpected error).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ._metrics import Recorder, publish_outcome
from .errors import ConfigurationError, KeyUnavailableError, SignatureError, WorkflowsError
from .events import BadEventError, WebhookEvent, parse_event
from .keys import WebhookVerifier

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["SIGNATURE_HEADER", "WebhookReceiver"]

log = logging.getLogger("workflows_async.webhooks")

SIGNATURE_HEADER = "JWS-SIGNATURE"
Publish = Callable[[WebhookEvent], Awaitable[bool]]


_ACCEPTED = json.dumps({"status": 200, "reason": "accepted"})


def _answer(status: int, reason: str, *, close: bool = False) -> web.Response:
    response = web.json_response({"status": status, "reason": reason}, status=status)
    if close:  # the rest of the body is not read: do not keep the connection for it
        response.force_close()
    return response


def _accepted() -> web.Response:
    """The same response as ``_answer(200, "accepted")``, without encoding it every time."""
    return web.Response(text=_ACCEPTED, content_type="application/json")


class _TooLarge(Exception):
    pass


class WebhookReceiver:
    """Handles the platform's POSTs. ``verifier=None`` accepts unsigned events (development).

    ``max_body`` bounds the body in bytes (413 above it); ``read_timeout`` bounds the time the
    whole body may take to arrive (408 after it; the platform itself gives up after 10 s).
    Every delivery is reported to ``recorder`` (counted by outcome, refusals logged at INFO
    with a reason code, one span each with OpenTelemetry).
    """

    def __init__(
        self,
        verifier: WebhookVerifier | None,
        publish: Publish,
        *,
        max_body: int = 1 << 20,
        read_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        recorder: Recorder | None = None,
    ) -> None:
        if read_timeout <= 0:
            raise ConfigurationError("read_timeout must be positive")
        self._verifier = verifier
        self._publish = publish
        self._max_body = max_body
        self._read_timeout = read_timeout
        self._clock = clock
        self._recorder = recorder if recorder is not None else Recorder()

    def app(self) -> web.Application:
        """An aiohttp application to mount with ``app.add_subapp(prefix, ...)``."""
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post("/", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one delivery; never raises (but cancellation), never answers 5xx but 503."""
        span = self._recorder.webhook_span()
        try:
            response = await self._handle(request, span)
        except web.HTTPException as exc:  # raised by aiohttp itself while reading
            if 400 <= exc.status < 500:
                response = self._reject(span, exc.status, "unreadable_body", exc.reason, True)
            else:
                response = self._unexpected(span, exc)
        except Exception as exc:  # the last resort: the endpoint never answers 500
            response = self._unexpected(span, exc)
        if response.keep_alive is False and not request.content.is_eof():
            await self._send_and_close(request, response)
        return response

    @staticmethod
    async def _send_and_close(request: web.Request, response: web.Response) -> None:
        """Send the refusal now and drop the connection: aiohttp would otherwise linger for
        seconds reading (and discarding) the rest of a body nobody wants, e.g. a trickle."""
        try:
            await response.prepare(request)
            await response.write_eof()
        except (OSError, RuntimeError):  # the peer is gone already
            pass
        request.protocol.force_close()  # the transport flushes what was written, then closes

    async def _handle(self, request: web.Request, span: Span | None) -> web.Response:
        received = self._clock()
        if request.content_length is not None and request.content_length > self._max_body:
            return self._reject(span, 413, "body_too_large", "body too large", True)
        signature = request.headers.get(SIGNATURE_HEADER)
        if self._verifier is not None:
            try:  # the header alone, before a byte of the body is read
                self._verifier.parse(signature)
            except SignatureError as exc:
                return self._reject(span, 401, "bad_signature", str(exc), True)
        try:
            async with asyncio.timeout(self._read_timeout):
                body = await self._read_body(request)
        except TimeoutError:
            return self._reject(span, 408, "read_timeout", "body not received in time", True)
        except _TooLarge:
            return self._reject(span, 413, "body_too_large", "body too large", True)
        except (HttpProcessingError, OSError) as exc:  # broken chunking, connection trouble
            why = f"body could not be read ({type(exc).__name__})"
            return self._reject(span, 400, "unreadable_body", why, True)
        if self._verifier is not None:
            try:
                await self._verifier.verify(signature, body)
            except SignatureError as exc:
                return self._reject(span, 401, "bad_signature", str(exc))
            except KeyUnavailableError as exc:
                return self._reject(span, 503, "key_unavailable", str(exc))
            except WorkflowsError as exc:  # e.g. the Session is closing: the platform retries
                why = f"event not accepted now ({type(exc).__name__})"
                return self._reject(span, 503, "unavailable", why)
        try:
            event = parse_event(body, received_at=received)
        except BadEventError as exc:
            return self._reject(span, 400, "bad_event", str(exc))
        trace = self._recorder.webhook_event(span, event.workflow_id, event.status)
        if trace is not None:  # travels with the event, so a wait anywhere can link to it
            event = msgspec.structs.replace(event, trace_context=trace)
        publish_outcome.set(None)
        try:
            published = await self._publish(event)
        except WorkflowsError as exc:  # e.g. the Session is closing: the platform retries
            why = f"event not accepted now ({type(exc).__name__})"
            return self._reject(span, 503, "unavailable", why)
        outcome = publish_outcome.get()
        if not published:
            why = "event could not be published; retry later"
            return self._reject(span, 503, outcome or "not_published", why)
        self._recorder.webhook_accepted(span, duplicate=outcome == "duplicate")
        return _accepted()

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole raw body, however many packets or chunks it came in; ``_TooLarge`` above
        the limit.

        (The stream is read directly: a sub-app's own ``client_max_size`` does not apply to
        ``request.read()``, which the root application's setting governs.)"""
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > self._max_body:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _unexpected(self, span: Span | None, exc: BaseException) -> web.Response:
        # The type only: an exception's text might quote the body.
        log.error("webhook handling failed unexpectedly: %s", type(exc).__name__)
        why = f"unexpected error ({type(exc).__name__}); retry later"
        return self._reject(span, 503, "unexpected_error", why, True)

    def _reject(
        self, span: Span | None, status: int, code: str, reason: str, close: bool = False
    ) -> web.Response:
        """Refuse a delivery: ``code`` is a fixed reason for counting, ``reason`` our own
        short text (never the body) for the answer and the INFO log line."""
        self._recorder.webhook_refused(span, code, status, reason)
        return _answer(status, reason, close=close)
