"""Receiving webhooks: one framework-free core, and the aiohttp sub-app as a thin adapter on it.

Invariants: every adapter (aiohttp, ASGI, a Django view, a sync framework) goes through
:meth:`WebhookCore.receive`, which runs the whole path and nothing skips a step: method, size
limit (Content-Length first, then while reading), signature header before a byte of the body
is read (unless verification is explicitly off for local development), read deadline,
verification over the raw bytes, parsing, the cluster-wide claim and publishing
(``publish``), and the last-resort guard; no user code and no API call runs on the
acknowledgement path, except a signing-key fetch for a kid never seen before; a 2xx means the
event was published (or handled locally), never that it went nowhere; the answer is never 500:
any unexpected error becomes a 503 (the platform retries) with a short reason and a log line
that names the error type only, never body content.

Answers: 200 accepted (also a duplicate or a replay, acknowledged without effect); 400 body not
a usable event, or not readable (broken chunking, connection trouble, client gone); 401
signature missing, malformed, of a disallowed algorithm, or not matching, or key refused for
good; 405 not a POST (with ``Allow: POST``); 408 body not received within ``read_timeout``;
413 body over ``max_body``; 503 retry later (signing key not published yet, key fetch budget
spent or key endpoint down, bus down, Session closing, or an unexpected error). Every delivery
is reported to the ``recorder`` once, whatever the adapter (counted by outcome, refusals
logged at INFO with a reason code, one span each with OpenTelemetry).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ._metrics import Recorder, publish_outcome
from .errors import ConfigurationError, KeyUnavailableError, SignatureError, WorkflowsError
from .events import BadEventError, WebhookEvent, parse_event
from .jws import DetachedSignature
from .keys import WebhookVerifier

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = [
    "SIGNATURE_HEADER",
    "BodyReadError",
    "WebhookAnswer",
    "WebhookCore",
    "WebhookReceiver",
]

log = logging.getLogger("workflows_async.webhooks")

SIGNATURE_HEADER = "JWS-SIGNATURE"
Publish = Callable[[WebhookEvent], Awaitable[bool]]
PublishNow = Callable[[WebhookEvent], str | None]
"""``publish`` answered without awaiting, when it can: ``"published"`` or ``"duplicate"``
(acknowledge), a reason code to answer 503 with, or None (then ``publish`` is awaited)."""
Body = bytes | AsyncIterable[bytes]
"""A webhook body: bytes already read, or chunks the core reads (lazily, after the header
check, under the size limit and the read deadline)."""


class BodyReadError(Exception):
    """Raised by an adapter's body iterator when the body cannot be read (broken chunking, the
    client went away): the core answers ``status`` (400 unless told) and closes. ``code`` is the
    fixed reason the refusal is counted under."""

    def __init__(self, reason: str, *, status: int = 400, code: str = "unreadable_body") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What to answer the platform: ``status``, a short ``reason``, and whether to ``close``
    the connection (the rest of the body was not read). ``body`` and ``headers`` are ready to
    send as they are, from any framework."""

    status: int
    reason: str
    close: bool = False

    @property
    def body(self) -> bytes:
        if self.status == 200 and self.reason == "accepted":
            return _ACCEPTED
        return json.dumps({"status": self.status, "reason": self.reason}).encode()

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.status == 405:
            headers["Allow"] = "POST"
        if self.close:
            headers["Connection"] = "close"
        return headers


_ACCEPTED = json.dumps({"status": 200, "reason": "accepted"}).encode()
_IN_MEMORY = (bytes, bytearray, memoryview)
ACCEPTED = WebhookAnswer(200, "accepted")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """``name``'s value in ``headers``, whatever the case of the keys (a plain dict, aiohttp's
    or Django's case-insensitive mappings alike)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, found in headers.items():
        if key.lower() == lowered:
            return found
    return None


class _TooLarge(Exception):
    pass


class WebhookCore:
    """The receiving path, framework-free: ``await core.receive(method, headers, body)``.

    ``verifier=None`` accepts unsigned events (development). ``max_body`` bounds the body in
    bytes (413 above it); ``read_timeout`` bounds the time the whole body may take to arrive
    (408 after it; the platform itself gives up after 10 s). Every delivery is reported to
    ``recorder`` once. ``publish_now`` (optional) is ``publish`` without a wait, tried first
    (see :data:`PublishNow`). Get one from ``Session.webhook_core()``.
    """

    def __init__(
        self,
        verifier: WebhookVerifier | None,
        publish: Publish,
        *,
        publish_now: PublishNow | None = None,
        max_body: int = 1 << 20,
        read_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        recorder: Recorder | None = None,
    ) -> None:
        if read_timeout <= 0:
            raise ConfigurationError("read_timeout must be positive")
        self._verifier = verifier
        self._publish = publish
        self._publish_now = publish_now
        self.max_body = max_body
        self.read_timeout = read_timeout
        self._clock = clock
        self._recorder = recorder if recorder is not None else Recorder()

    async def receive(self, method: str, headers: Mapping[str, str], body: Body) -> WebhookAnswer:
        """Answer one delivery. ``headers`` is any mapping (keys in any case); ``body`` is the
        raw bytes, or an async iterable of chunks that is read only once the method, the
        Content-Length and the signature header are acceptable. Never raises (but
        cancellation); never answers 5xx but 503."""
        span = self._recorder.webhook_span()
        try:  # one coroutine for the whole path: no await of a helper coroutine per delivery
            received = self._clock()
            if method != "POST" and method.upper() != "POST":
                return self._reject(span, 405, "method_not_allowed", "only POST is accepted")
            # headers.get first: aiohttp's and most frameworks' headers ignore case already.
            length = _content_length(
                headers.get("Content-Length") or header(headers, "Content-Length")
            )
            if length is not None and length > self.max_body:
                return self._reject(span, 413, "body_too_large", "body too large", True)
            signature = headers.get(SIGNATURE_HEADER) or header(headers, SIGNATURE_HEADER)
            sig: DetachedSignature | None = None
            if self._verifier is not None:
                try:  # the header alone, before a byte of the body is read
                    sig = self._verifier.parse(signature)
                except SignatureError as exc:
                    return self._reject(span, 401, "bad_signature", str(exc), True)
            if isinstance(body, _IN_MEMORY):  # read already: nothing to wait for
                if len(body) > self.max_body:
                    return self._reject(span, 413, "body_too_large", "body too large", True)
                raw = bytes(body)
            else:
                try:
                    async with asyncio.timeout(self.read_timeout):
                        raw = await self._read_body(body)
                except TimeoutError:
                    return self._reject(
                        span, 408, "read_timeout", "body not received in time", True
                    )
                except _TooLarge:
                    return self._reject(span, 413, "body_too_large", "body too large", True)
                except BodyReadError as exc:
                    return self._reject(span, exc.status, exc.code, exc.reason, True)
                except OSError as exc:  # connection trouble while reading
                    why = f"body could not be read ({type(exc).__name__})"
                    return self._reject(span, 400, "unreadable_body", why, True)
            if self._verifier is not None and sig is not None:
                try:  # a held key verifies without a wait; a new kid's key is fetched first
                    if self._verifier.verify_held(sig, raw) is None:
                        await self._verifier.verify_parsed(sig, raw)
                except SignatureError as exc:
                    return self._reject(span, 401, "bad_signature", str(exc))
                except KeyUnavailableError as exc:
                    return self._reject(span, 503, "key_unavailable", str(exc))
                except WorkflowsError as exc:  # e.g. the Session is closing: the platform retries
                    why = f"event not accepted now ({type(exc).__name__})"
                    return self._reject(span, 503, "unavailable", why)
            try:
                event = parse_event(raw, received_at=received)
            except BadEventError as exc:
                return self._reject(span, 400, "bad_event", str(exc))
            if span is not None:  # a recording span: its context travels with the event
                trace = self._recorder.webhook_event(span, event.workflow_id, event.status)
                if trace is not None:  # so a wait in any process can link to it
                    event = msgspec.structs.replace(event, trace_context=trace)
            publish_now = self._publish_now
            try:
                outcome = None if publish_now is None else publish_now(event)
                if outcome is None:  # publish must await: its outcome comes in the context
                    publish_outcome.set(None)
                    published = await self._publish(event)
                    outcome = publish_outcome.get()
                else:
                    published = outcome == "published" or outcome == "duplicate"
            except WorkflowsError as exc:  # e.g. the Session is closing: the platform retries
                why = f"event not accepted now ({type(exc).__name__})"
                return self._reject(span, 503, "unavailable", why)
            if not published:
                why = "event could not be published; retry later"
                return self._reject(span, 503, outcome or "not_published", why)
            self._recorder.webhook_accepted(span, duplicate=outcome == "duplicate")
            return ACCEPTED
        except Exception as exc:  # the last resort: the endpoint never answers 500
            return self._unexpected(span, exc)

    async def _read_body(self, body: AsyncIterable[bytes]) -> bytes:
        """The whole raw body, however many chunks it came in; ``_TooLarge`` above the limit."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in body:
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _unexpected(self, span: Span | None, exc: BaseException) -> WebhookAnswer:
        # The type only: an exception's text might quote the body.
        log.error("webhook handling failed unexpectedly: %s", type(exc).__name__)
        why = f"unexpected error ({type(exc).__name__}); retry later"
        return self._reject(span, 503, "unexpected_error", why, True)

    def _reject(
        self, span: Span | None, status: int, code: str, reason: str, close: bool = False
    ) -> WebhookAnswer:
        """Refuse a delivery: ``code`` is a fixed reason for counting, ``reason`` our own
        short text (never the body) for the answer and the INFO log line."""
        self._recorder.webhook_refused(span, code, status, reason)
        return WebhookAnswer(status, reason, close)


def _content_length(value: str | None) -> int | None:
    """A Content-Length as a number; None when it is not ASCII digits (a server refuses such a
    header before we see it; one that lets it through gets no crash here: the body is still
    read within ``max_body``). More than 18 digits is more than any ``max_body``."""
    if value is None:
        return None
    value = value.strip()
    if not (value.isdigit() and value.isascii()):  # "²".isdigit() is True, int("²") fails
        return None
    return int(value) if len(value) <= 18 else 1 << 62


_ASGI_MISTAKE = (
    "this is the aiohttp sub-app from session.webhook_app(), for aiohttp's "
    "app.add_subapp(); it was called as an ASGI app: for FastAPI, Starlette, Django (ASGI), "
    "Quart or Litestar mount session.webhook_asgi() instead"
)

with warnings.catch_warnings():  # aiohttp discourages subclasses; this one adds no state
    warnings.simplefilter("ignore", DeprecationWarning)

    class WebhookApplication(web.Application):
        """The aiohttp sub-app, refusing loudly to be used as an ASGI app (which an ASGI
        framework's ``mount`` would otherwise accept, to fail with a bare ``TypeError``)."""

        def __call__(self, *args: Any, **kwargs: Any) -> WebhookApplication:
            if args or kwargs:  # ASGI: app(scope, receive, send)
                log.error("%s", _ASGI_MISTAKE)
                raise ConfigurationError(_ASGI_MISTAKE)
            return self  # aiohttp's own gunicorn compatibility


class WebhookReceiver:
    """The aiohttp adapter over :class:`WebhookCore` (same arguments)."""

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
        self.core = WebhookCore(
            verifier,
            publish,
            max_body=max_body,
            read_timeout=read_timeout,
            clock=clock,
            recorder=recorder,
        )

    @classmethod
    def from_core(cls, core: WebhookCore) -> WebhookReceiver:
        """The adapter over an existing core (``Session.webhook_core()``)."""
        receiver = cls.__new__(cls)
        receiver.core = core
        return receiver

    def app(self) -> web.Application:
        """An aiohttp application to mount with ``app.add_subapp(prefix, ...)``: it answers at
        ``prefix`` and ``prefix/`` alike, every method (405 from the core but for POST)."""
        app = WebhookApplication(client_max_size=self.core.max_body)
        app.router.add_route("*", "", self.handle)
        app.router.add_route("*", "/", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one delivery; never raises (but cancellation), never answers 5xx but 503."""
        # The whole body when it is in memory already (a webhook's usually came in the packets
        # of its headers), else read as it arrives, under the core's limits.
        content = request.content
        if content.is_eof() and content.exception() is None:
            body: Body = content.read_nowait()
        else:
            body = _chunks(request)
        answer = await self.core.receive(request.method, request.headers, body)
        if answer is ACCEPTED:
            return web.Response(body=_ACCEPTED, content_type="application/json")
        response = web.Response(body=answer.body, status=answer.status, headers=answer.headers)
        if answer.close:  # the rest of the body is not read: do not keep the connection for it
            response.force_close()
            if not request.content.is_eof():
                await _send_and_close(request, response)
        return response


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The raw body as it arrives. (The stream is read directly: a sub-app's own
    ``client_max_size`` does not apply to ``request.read()``, which the root app governs.)"""
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except web.HTTPException as exc:  # raised by aiohttp itself while reading
        if 400 <= exc.status < 500:
            raise BodyReadError(exc.reason, status=exc.status) from None
        raise
    except HttpProcessingError as exc:  # broken chunking
        raise BodyReadError(f"body could not be read ({type(exc).__name__})") from None


async def _send_and_close(request: web.Request, response: web.Response) -> None:
    """Send the refusal now and drop the connection: aiohttp would otherwise linger for
    seconds reading (and discarding) the rest of a body nobody wants, e.g. a trickle."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except (OSError, RuntimeError):  # the peer is gone already
        pass
    request.protocol.force_close()  # the transport flushes what was written, then closes
