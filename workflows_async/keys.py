"""Webhook signing keys by ``kid``, and the verifier that uses them.

Invariants: a kid is a canonical UUID (folded to lower case) before it is looked up, let alone
fetched; a kid has at most one fetch in flight and at most ``max_fetches`` fetches start in any
``per_seconds`` window; a loaded key is kept for good (a kid never changes key), and a kid the API
does not know is refused without fetching for ``negative_ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .errors import (
    APIError,
    ConfigurationError,
    KeyUnavailableError,
    NotFoundError,
    SignatureError,
    TransportError,
)
from .jws import (
    DEFAULT_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    ProtectedHeader,
    check_kid,
    load_public_key,
    parse_signature,
    verify_signature,
)

__all__ = ["KeyFetcher", "KeyMaterial", "KeyStore", "WebhookVerifier"]

KeyFetcher = Callable[[str], Awaitable[str]]
"""``fetch(kid)`` returns the PEM text of the key (``GET /auth/webhooks/key/{kid}?pem=true``)."""
KeyMaterial = str | bytes | Mapping[str, Any]
"""PEM text or bytes, or an RSA JWK mapping."""


class KeyStore:
    """RSA public keys by kid: pinned ones, and ones fetched once and cached.

    ``get`` raises ``SignatureError`` for a kid that is malformed or unknown (API said 404, the
    material was unusable, or there is no ``fetch``), and ``KeyUnavailableError`` when the key
    cannot be had right now (fetch budget spent, network or server trouble), so the platform's
    delivery should be answered with a retryable status.
    """

    def __init__(
        self,
        fetch: KeyFetcher | None,
        *,
        pinned: Mapping[str, KeyMaterial] | None = None,
        negative_ttl: float = 300.0,
        max_fetches: int = 10,
        per_seconds: float = 60.0,
        key_ttl: float = 86400.0,
        fetch_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if negative_ttl < 0:
            raise ConfigurationError("negative_ttl must not be negative")
        if max_fetches < 0:
            raise ConfigurationError("max_fetches must not be negative")
        if per_seconds <= 0:
            raise ConfigurationError("per_seconds must be positive")
        if key_ttl <= 0:
            raise ConfigurationError("key_ttl must be positive")
        self._fetch = fetch
        self._key_ttl = key_ttl
        self._fetch_timeout = fetch_timeout
        self._expires: dict[str, float] = {}  # fetched keys only: pinned ones never expire
        self._negative_ttl = negative_ttl
        self._max_fetches = max_fetches
        self._per_seconds = per_seconds
        self._clock = clock
        self._keys: dict[str, RSAPublicKey] = {}
        self._unknown: dict[str, float] = {}  # kid -> when the refusal expires
        self._inflight: dict[str, asyncio.Task[RSAPublicKey]] = {}
        self._recent: deque[float] = deque()  # start times of fetches inside the window
        self._fetch_count = 0
        for kid, material in (pinned or {}).items():
            self.add(kid, material)

    @property
    def fetch_count(self) -> int:
        """How many fetches this store has started."""
        return self._fetch_count

    def add(self, kid: str, material: KeyMaterial) -> None:
        """Pin ``material`` as the key for ``kid``; ``ConfigurationError`` when unacceptable."""
        try:
            canonical = check_kid(kid)
        except SignatureError:
            raise ConfigurationError("pinned key id is not a canonical UUID") from None
        try:
            key = load_public_key(material)
        except SignatureError as exc:
            raise ConfigurationError(f"pinned key {canonical}: {exc}") from None
        self._keys[canonical] = key
        self._expires.pop(canonical, None)  # pinned: never re-checked
        self._unknown.pop(canonical, None)

    async def get(self, kid: str) -> RSAPublicKey:
        """The key for ``kid``, fetching it at most once however many callers ask together.

        A fetched key is checked again in the background once ``key_ttl`` has passed (a key
        the API no longer serves then stops being trusted); meanwhile, and while the API
        cannot answer that check, the key it gave before is used."""
        if isinstance(kid, str) and (known := self._keys.get(kid)) is not None:
            canonical = kid  # kids are stored canonical, so an exact match is a canonical kid
        else:
            canonical = check_kid(kid)
            known = self._keys.get(canonical)
        if known is not None:
            expires = self._expires.get(canonical)
            if expires is not None and self._clock() >= expires and canonical not in self._inflight:
                # Re-check in the background: the webhook being verified does not wait for it.
                with contextlib.suppress(SignatureError, KeyUnavailableError):
                    self._start_fetch(canonical)
            return known
        task = self._inflight.get(canonical) or self._start_fetch(canonical)
        # shield: a caller that is cancelled leaves the shared fetch running for the others.
        return await asyncio.shield(task)

    def _start_fetch(self, kid: str) -> asyncio.Task[RSAPublicKey]:
        now = self._clock()
        expires = self._unknown.get(kid)
        if expires is not None:
            if now < expires:
                raise SignatureError("unknown signing key")
            del self._unknown[kid]
        if self._fetch is None:
            raise SignatureError("unknown signing key")
        while self._recent and self._recent[0] <= now - self._per_seconds:
            self._recent.popleft()
        if len(self._recent) >= self._max_fetches:
            raise KeyUnavailableError("too many signing key fetches; retry later")
        self._recent.append(now)
        self._fetch_count += 1
        task = asyncio.get_running_loop().create_task(self._load(kid, self._fetch))
        self._inflight[kid] = task
        task.add_done_callback(functools.partial(self._fetch_done, kid))
        return task

    def _fetch_done(self, kid: str, task: asyncio.Task[RSAPublicKey]) -> None:
        if self._inflight.get(kid) is task:
            del self._inflight[kid]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not reported as lost

    async def _load(self, kid: str, fetch: KeyFetcher) -> RSAPublicKey:
        try:
            async with asyncio.timeout(self._fetch_timeout):  # a webhook delivery is waiting
                material = await fetch(kid)
        except NotFoundError:
            self._forget(kid)
            raise SignatureError("unknown signing key") from None
        except (TransportError, APIError, TimeoutError, OSError) as exc:
            reason = f"signing key could not be fetched ({type(exc).__name__})"
            raise KeyUnavailableError(reason) from exc
        try:
            key = load_public_key(material)
        except SignatureError:
            self._forget(kid)
            raise SignatureError("unusable signing key") from None
        self._keys[kid] = key
        self._expires[kid] = self._clock() + self._key_ttl
        return key

    def _forget(self, kid: str) -> None:
        """The API does not (or no longer) serve a usable key for ``kid``."""
        if kid in self._expires:  # a fetched key, never a pinned one
            del self._expires[kid]
            del self._keys[kid]
        self._remember_unknown(kid)

    def _remember_unknown(self, kid: str) -> None:
        now = self._clock()
        for stale in [k for k, until in self._unknown.items() if until <= now]:
            del self._unknown[stale]
        if self._negative_ttl > 0:
            self._unknown[kid] = now + self._negative_ttl


class WebhookVerifier:
    """Checks a webhook's ``JWS-SIGNATURE`` header against its raw body."""

    def __init__(self, keys: KeyStore, *, algorithms: Collection[str] = DEFAULT_ALGORITHMS) -> None:
        if isinstance(algorithms, str):
            raise ConfigurationError("algorithms must be a collection of names")
        allowed = frozenset(algorithms)
        if not allowed:
            raise ConfigurationError("at least one signature algorithm must be allowed")
        unsupported = allowed - SUPPORTED_ALGORITHMS
        if unsupported:
            raise ConfigurationError(f"unsupported signature algorithms: {sorted(unsupported)}")
        self._keys = keys
        self._algorithms = allowed

    @property
    def algorithms(self) -> frozenset[str]:
        return self._algorithms

    async def verify(self, signature_header: str | None, body: bytes) -> ProtectedHeader:
        """Return the protected header when the signature holds; raise ``SignatureError`` or
        ``KeyUnavailableError`` otherwise. The header is fully checked before any key lookup."""
        if not signature_header:
            raise SignatureError("missing JWS-SIGNATURE header")
        sig = parse_signature(signature_header, algorithms=self._algorithms, require_kid=True)
        if sig.header.kid is None:  # parse_signature guarantees it; keeps the types honest
            raise SignatureError("header has no kid")
        key = await self._keys.get(sig.header.kid)
        verify_signature(sig, body, key)
        return sig.header
