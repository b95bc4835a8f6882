"""The one place that touches ``aiohttp.ClientSession``: send, authorize, retry, answer.

Invariants: every request goes through :meth:`HttpClient.request`; it returns a 2xx
:class:`Response` or raises a :mod:`workflows_async.errors` exception, never another one;
retries follow :class:`RetryPolicy`: a request that is not replayable (a POST other than a token
request) is resent only when it surely did not reach the server (never connected, or 429), and
any other failure of it whose outcome is unknown raises :class:`OutcomeUnknownError`; a 401 leads
to at most two resends (with a newer value, then with a renewed one) and never a loop; no body
larger than ``max_response_body`` is read into memory; at most as many requests are in flight
as the connection pool has connections, and a request's Authorization value is taken only once
it holds one of those slots (a value taken earlier could expire while the request queues); the
retry loop waits only through ``HttpClient.sleep`` and reads time only from ``HttpClient.clock``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from multidict import CIMultiDictProxy

from ._api_errors import error_for_status
from ._metrics import CallHandle, Recorder, renewal_reason
from ._retry import IDEMPOTENT_METHODS, RetryPolicy
from .auth import Auth
from .errors import (
    APIError,
    AuthenticationError,
    CredentialsError,
    OutcomeUnknownError,
    RateLimitError,
    RequestTimeout,
    ResponseTooLargeError,
    SessionClosedError,
    TransportError,
)

__all__ = ["DEFAULT_MAX_RESPONSE_BODY", "HttpClient", "Response"]

DEFAULT_MAX_RESPONSE_BODY = 16 << 20
# An error answer is read only this far: its excerpt is all that is kept of it.
_ERROR_BODY_LIMIT = 64 << 10
_FIXED_TOKEN_REFUSED = "a fixed token cannot be renewed; supply a new one"  # noqa: S105
_TOKEN_PATHS = frozenset({"/auth/authorize", "/auth/refresh"})
_AIOHTTP_DEFAULT_LIMIT = 100  # aiohttp.TCPConnector's own default


@dataclasses.dataclass(slots=True)
class Response:
    """A 2xx answer as it came: status, headers and raw body bytes. (Not frozen: a frozen
    dataclass's ``__init__`` makes three ``object.__setattr__`` calls on every API call.)"""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class _TooLarge(Exception):
    """Internal: a body passed the size limit."""


async def _read(resp: aiohttp.ClientResponse, limit: int, *, truncate: bool) -> bytes:
    """The body, read in chunks up to ``limit`` bytes (decompressed size): checked against
    Content-Length first, then while reading. Beyond the limit: the part read when
    ``truncate``, else :class:`_TooLarge`."""
    if not truncate and (length := resp.content_length) is not None and length > limit:
        raise _TooLarge
    content = resp.content
    chunks: list[bytes] = []
    size = 0
    # ``readany`` until it gives b"" is what ``iter_any`` iterates, without its iterator objects.
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            if not truncate:
                raise _TooLarge
            chunks.append(chunk[: len(chunk) - (size - limit)])
            break
        chunks.append(chunk)
    return b"".join(chunks)


class _Retry(Exception):
    """Internal: carries an error that the policy allows to retry."""

    def __init__(self, error: APIError | TransportError, retry_after: float | None) -> None:
        super().__init__()
        self.error = error
        self.retry_after = retry_after


def _reason(error: APIError | TransportError) -> str:
    """A retry's reason for its log line: a status or an error class, never a path or body."""
    if isinstance(error, APIError):
        return f"status {error.status}"
    return type(error).__name__


def _next_delay(policy: RetryPolicy, retry: int, failed: _Retry, left: float) -> float | None:
    """The wait before retry number ``retry`` with ``left`` seconds to the call's deadline;
    None when none fits. A server's Retry-After is honoured in full or not at all: a try
    before it is over would only be refused again."""
    wait = policy.delay(retry, failed.retry_after)
    if left <= 0 or (failed.retry_after is not None and wait > left):
        return None
    return min(wait, left)


class _Slots:
    """At most ``limit`` holders at once; the others wait first come, first served, and a slot
    given back goes straight to the longest waiter (a newcomer never overtakes the queue).

    What ``asyncio.Semaphore`` does, with a fast path of one plain method call: every request
    takes a slot, and the semaphore's ``async with`` costs several coroutine and generator
    frames."""

    __slots__ = ("_free", "_waiting")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_now(self) -> bool:
        """Take a slot if one is free and nobody waits for one; never waits."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting in line for one when none is free."""
        if self.take_now():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as this waiter gave up: pass it on
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

    def give(self) -> None:
        """Give a slot back: to the longest waiter still waiting, else to the free ones."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


@dataclasses.dataclass(slots=True)
class _Request:
    """One call's fixed parts, shared by all its attempts. ``used`` is the Authorization
    value the latest attempt carried (the one a 401 refused)."""

    call: CallHandle
    method: str
    path: str
    body: bytes | None
    params: Mapping[str, str] | None
    headers: dict[str, str]
    retry: bool
    replayable: bool
    gated: bool
    auth: Auth | None
    used: str = ""


class HttpClient:
    """Sends requests to ``base_url`` with the given headers, timeout and retry policy.

    ``sleep`` and ``clock`` (monotonic seconds) are what the retry loop waits with and measures
    ``RetryPolicy.max_time`` by: tests swap them to record the waits instead of sleeping.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None = None,
        auth: Auth | None = None,
        max_response_body: int = DEFAULT_MAX_RESPONSE_BODY,
        connection_limit: int | None = None,
        recorder: Recorder | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.recorder = recorder if recorder is not None else Recorder()
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
        self.retry = retry
        self.auth = auth
        self.max_response_body = max_response_body
        self.sleep = sleep
        self.clock = clock
        self._connection_limit = connection_limit
        self._session = session
        self._owns_session = session is None
        self.closed = False
        """True once :meth:`close` began: every request then raises SessionClosedError (an
        attribute, not a property: the Session reads it on every call)."""
        # Requests wait here, not in aiohttp's pool: there the request timeout would already be
        # running, and the Authorization value already taken (see _attempt).
        if session is None:
            limit = connection_limit or _AIOHTTP_DEFAULT_LIMIT
        else:
            limit = session.connector.limit if session.connector is not None else 0
        self._slots = _Slots(limit) if limit > 0 else None

    def _client(self) -> aiohttp.ClientSession:
        if self.closed:
            raise SessionClosedError("the Session is closed")
        if self._session is None:
            connector = None
            if self._connection_limit is not None:
                connector = aiohttp.TCPConnector(limit=self._connection_limit)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                raise_for_status=False,
                auto_decompress=True,
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
        retry: bool = True,
        authorize: bool = True,
        replayable: bool | None = None,
        gated: bool = True,
    ) -> Response:
        """Send one request (with retries unless ``retry=False``); return its 2xx answer.

        With ``authorize`` (and an auth), the request carries the auth's Authorization value;
        a 401 is answered as the auth flow says: resend once with the current value if it
        differs from the refused one, and if that is refused too (or there was none newer),
        renew (one renewal shared by every caller) and resend once more. ``replayable`` says
        that sending the request twice cannot duplicate an effect (default: by method).
        ``gated=False`` skips the wait for a slot: for the token request that the requests
        holding slots may be waiting for. Every attempt is reported to the recorder; the call
        is one span however many attempts it takes.
        """
        call = self.recorder.call_started(method, path)
        headers = self._headers
        if accept is not None or body is not None:
            headers = dict(headers)
            if accept is not None:
                headers["Accept"] = accept
            if body is not None:
                headers["Content-Type"] = "application/json"
        if replayable is None:
            replayable = method.upper() in IDEMPOTENT_METHODS
        auth = self.auth if authorize else None
        req = _Request(call, method, path, body, params, headers, retry, replayable, gated, auth)
        try:
            try:
                response = await self._send(req)
            except AuthenticationError as refused:
                if auth is None or isinstance(refused, CredentialsError):
                    raise  # nothing to resend with, or the token request itself was refused
                first = refused
            else:
                self.recorder.call_ended(call, response.status)
                return response
            response = await self._after_401(req, auth, first)
        except BaseException as exc:
            self.recorder.call_ended(call, getattr(exc, "status", None), type(exc).__name__)
            raise
        self.recorder.call_ended(call, response.status)
        return response

    async def _after_401(self, req: _Request, auth: Auth, first: AuthenticationError) -> Response:
        """The 401 flow, after ``first`` refused the value ``req.used``: at most two resends
        (with a newer value, then with a renewed one), never a loop."""
        if await auth.authorization(self._token_request) != req.used:
            try:  # another call renewed meanwhile: that value may do
                return await self._send(req)
            except CredentialsError:
                raise
            except AuthenticationError:
                pass
        why = renewal_reason.set(f"401 from {req.call.template}")
        try:
            renewed = await auth.renew(self._token_request, req.used)
        finally:
            renewal_reason.reset(why)
        if renewed is None:
            raise CredentialsError(
                first.status,
                method=first.method,
                path=first.path,
                body_excerpt=first.body_excerpt,
                request_id=first.request_id,
                detail=getattr(auth, "refused_detail", _FIXED_TOKEN_REFUSED),
                code=first.code,
            ) from None
        # A 401 now, after a renewal, is a plain AuthenticationError: the token is new, so the
        # next call renews again (e.g. tokens revoked in the meantime), never in a loop here.
        # (The attempt takes the renewed value, unless it expired by the clock while queued.)
        return await self._send(req)

    async def _token_request(self, path: str, body: bytes) -> bytes:
        """The auth's :data:`~workflows_async.auth.TokenRequest`: no Authorization header,
        retried like a GET."""
        self.recorder.token_request(path.rpartition("/")[2], renewal_reason.get())
        response = await self.request(
            "POST", path, body=body, authorize=False, replayable=True, gated=False
        )
        return response.body

    async def _send(self, req: _Request) -> Response:
        """One request with the retries the policy allows, under one deadline (``max_time``
        covers the whole call, sleeps included); each attempt holds a connection slot (unless
        the request is not ``gated``), never a sleep. Why this loop is ours: see ``_retry.py``.
        """
        policy = self.retry
        attempts = policy.max_attempts if req.retry else 1
        deadline = self.clock() + policy.max_time
        slots = self._slots if req.gated else None
        retry = 0
        while True:
            client = self._client()
            if slots is not None and not slots.take_now():
                await slots.take()
            try:
                return await self._attempt(client, req)
            except _Retry as failed:
                wait = None
                if retry + 1 < attempts:
                    wait = _next_delay(policy, retry, failed, deadline - self.clock())
                if wait is None:
                    raise failed.error from None
                self.recorder.retry(req.call, wait, _reason(failed.error))
            finally:
                if slots is not None:
                    slots.give()
            await self.sleep(wait)
            retry += 1

    async def _attempt(self, client: aiohttp.ClientSession, req: _Request) -> Response:
        method, path, replayable, call = req.method, req.path, req.replayable, req.call
        headers = req.headers
        if req.auth is not None:  # taken now, when the request is about to go out
            req.used = await req.auth.authorization(self._token_request)
            headers = {**headers, "Authorization": req.used}
        url = self.base_url + path
        started = time.perf_counter()
        try:
            async with client.request(
                method,
                url,
                data=req.body,
                headers=headers,
                params=req.params,
                timeout=self._timeout,
                # Never follow: a redirect would resend credentials, bodies with personal data
                # and key requests to wherever it points, https or not.
                allow_redirects=False,
            ) as resp:
                status, resp_headers = resp.status, resp.headers
                limit = self.max_response_body
                if not 200 <= status < 300:
                    limit = min(limit, _ERROR_BODY_LIMIT)  # only an excerpt is kept
                    payload = await _read(resp, limit, truncate=True)
                else:
                    payload = await _read(resp, limit, truncate=False)
        except _TooLarge:
            self.recorder.attempt(
                call, status, time.perf_counter() - started, error="ResponseTooLargeError"
            )
            too_large = ResponseTooLargeError(
                method=method, path=path, limit=self.max_response_body, status=status
            )
            if replayable:
                raise too_large from None
            why = "its answer was too large to read"
            raise self._unknown(method, path, why, status) from too_large
        except aiohttp.ClientConnectorError as exc:
            self._no_answer(call, started, "cannot connect")
            reason = f"cannot connect ({exc.os_error})"
            raise self._transport(method, path, reason, False, replayable) from None
        except aiohttp.ConnectionTimeoutError:
            self._no_answer(call, started, "connection timed out")
            raise self._transport(method, path, "connection timed out", False, replayable) from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            self._no_answer(call, started, "timed out")
            raise self._transport(
                method, path, "timed out", True, replayable, timeout=True
            ) from None
        except (aiohttp.ClientError, ValueError, LookupError) as exc:
            # ValueError/LookupError: e.g. a header or URL aiohttp or yarl cannot take.
            self._no_answer(call, started, type(exc).__name__)
            raise self._transport(method, path, type(exc).__name__, True, replayable) from None
        self.recorder.attempt(call, status, time.perf_counter() - started, headers=resp_headers)
        if 200 <= status < 300:
            return Response(status, resp_headers, payload)
        error = error_for_status(
            status, method=method, path=path, headers=resp_headers, body=payload
        )
        assert error is not None  # not a 2xx
        if not self.retry.retry_status(method, status, replayable=replayable):
            if not replayable and self.retry.outcome_unknown(status):
                raise self._unknown(method, path, f"it was answered {status}", status) from error
            raise error
        if not self.retry.retry_after_allowed(error.retry_after):
            raise RateLimitError(
                status,
                method=method,
                path=path,
                body_excerpt=error.body_excerpt,
                request_id=error.request_id,
                retry_after=error.retry_after,
                code=error.code,
            ) from None
        raise _Retry(error, error.retry_after)

    def _no_answer(self, call: CallHandle, started: float, reason: str) -> None:
        self.recorder.attempt(call, None, time.perf_counter() - started, error=reason)

    @staticmethod
    def _unknown(method: str, path: str, why: str, status: int | None) -> OutcomeUnknownError:
        return OutcomeUnknownError(
            f"{method} {path} may or may not have taken effect ({why}); it was not resent: "
            "check before sending it again",
            method=method,
            path=path,
            status=status,
        )

    def _transport(
        self,
        method: str,
        path: str,
        reason: str,
        connected: bool,
        replayable: bool,
        *,
        timeout: bool = False,
    ) -> Exception:
        cls = RequestTimeout if timeout else TransportError
        error = cls(f"{method} {path} failed: {reason}", method=method, path=path)
        if self.retry.retry_transport(method, connected=connected, replayable=replayable):
            return _Retry(error, None)
        if connected and not replayable:
            return self._unknown(method, path, f"{reason} after it was sent", None)
        return error

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        # Let aiohttp's connector finish closing its transports (avoids ResourceWarnings).
        await asyncio.sleep(0)
