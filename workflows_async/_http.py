"""The one place that touches ``aiohttp.ClientSession``: send, retry (with ``backoff``), answer.

Invariants: every request goes through :meth:`HttpClient.request`; it returns a 2xx
:class:`Response` or raises a :mod:`workflows_async.errors` exception, never an aiohttp one;
retries follow :class:`RetryPolicy` (a POST is resent only when it surely did not take effect).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Generator, Mapping
from typing import Any

import aiohttp
import backoff
from multidict import CIMultiDictProxy

from ._decipher import error_for_status
from ._retry import RetryPolicy
from .errors import APIError, RateLimitError, RequestTimeout, SessionClosedError, TransportError

__all__ = ["HttpClient", "Response"]


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """A 2xx answer as it came: status, headers and raw body bytes."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class _Retry(Exception):
    """Internal: carries an error that the policy allows to retry."""

    def __init__(self, error: APIError | TransportError, retry_after: float | None) -> None:
        super().__init__()
        self.error = error
        self.retry_after = retry_after


def _next_delay(policy: RetryPolicy, retry: int, failed: _Retry, deadline: float) -> float:
    """The wait before the next try; raises ``failed`` when none fits before ``deadline``.

    A server's Retry-After is honoured in full or not at all: a try before it is over would
    only be refused again."""
    left = deadline - time.monotonic()
    wait = policy.delay(retry, failed.retry_after)
    if left <= 0 or (failed.retry_after is not None and wait > left):
        raise failed
    return min(wait, left)


def _wait_gen(policy: RetryPolicy, retry: int, deadline: float) -> Generator[float, Any, None]:
    """A ``backoff`` wait generator over :func:`_next_delay`; ``retry`` numbers the first wait."""
    sent = yield 0.0  # backoff primes the generator with send(None)
    while True:
        if not isinstance(sent, _Retry):  # pragma: no cover - backoff sends what it caught
            raise TypeError("unexpected value sent to the wait generator")
        sent = yield _next_delay(policy, retry, sent, deadline)
        retry += 1


class HttpClient:
    """Sends requests to ``base_url`` with the given headers, timeout and retry policy."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))
        self.retry = retry
        self._session = session
        self._owns_session = session is None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise SessionClosedError("the Session is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, raise_for_status=False, auto_decompress=True
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        bearer: str | None = None,
        authorization: str | None = None,
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
        retry: bool = True,
    ) -> Response:
        """Send one request (with retries unless ``retry=False``); return its 2xx answer."""
        headers = dict(self._headers)
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        if authorization is not None:
            headers["Authorization"] = authorization  # e.g. an organization token, as it is
        if accept is not None:
            headers["Accept"] = accept
        if body is not None:
            headers["Content-Type"] = "application/json"
        policy = self.retry
        deadline = time.monotonic() + policy.max_time
        try:
            return await self._send_once(method, path, body, headers, params)
        except _Retry as failed:
            if not retry or policy.max_attempts == 1:
                raise failed.error from None
            try:
                first_wait = _next_delay(policy, 0, failed, deadline)
            except _Retry:
                raise failed.error from None
        # Most calls succeed at once and never pay for backoff's bookkeeping (it was most of
        # the per-call cost next to raw aiohttp). After a first failure, the remaining tries
        # run under backoff, within the same deadline (``max_time`` covers the whole call).
        await asyncio.sleep(first_wait)
        send = backoff.on_exception(
            _wait_gen,
            _Retry,
            max_tries=policy.max_attempts - 1,
            max_time=max(0.0, deadline - time.monotonic()),
            jitter=None,
            logger=None,
            policy=policy,
            retry=1,
            deadline=deadline,
        )(self._send_once)
        try:
            response: Response = await send(method, path, body, headers, params)
        except _Retry as exhausted:
            raise exhausted.error from None
        return response

    async def _send_once(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        params: Mapping[str, str] | None,
    ) -> Response:
        client = self._client()
        url = self.base_url + path
        try:
            async with client.request(
                method,
                url,
                data=body,
                headers=headers,
                params=params,
                timeout=self._timeout,
                # Never follow: a redirect would resend credentials, bodies with personal data
                # and key requests to wherever it points, https or not.
                allow_redirects=False,
            ) as resp:
                payload = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except aiohttp.ClientConnectorError as exc:
            raise self._transport(method, path, f"cannot connect ({exc.os_error})", False) from None
        except aiohttp.ConnectionTimeoutError:
            raise self._transport(method, path, "connection timed out", False) from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise self._transport(method, path, "timed out", True, timeout=True) from None
        except aiohttp.ClientError as exc:
            raise self._transport(method, path, type(exc).__name__, True) from None
        error = error_for_status(
            status, method=method, path=path, headers=resp_headers, body=payload
        )
        if error is None:
            return Response(status, resp_headers, payload)
        if not self.retry.retry_status(method, status):
            raise error
        if not self.retry.retry_after_allowed(error.retry_after):
            raise RateLimitError(
                status,
                method=method,
                path=path,
                body_excerpt=error.body_excerpt,
                request_id=error.request_id,
                retry_after=error.retry_after,
            ) from None
        raise _Retry(error, error.retry_after)

    def _transport(
        self, method: str, path: str, reason: str, connected: bool, *, timeout: bool = False
    ) -> Exception:
        cls = RequestTimeout if timeout else TransportError
        error = cls(f"{method} {path} failed: {reason}", method=method, path=path)
        if self.retry.retry_transport(method, connected=connected):
            return _Retry(error, None)
        return error

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        # Let aiohttp's connector finish closing its transports (avoids ResourceWarnings).
        await asyncio.sleep(0)
