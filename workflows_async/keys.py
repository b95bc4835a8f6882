"""Webhook signing keys by ``kid``, and the verifier that uses them.

Invariants: a kid is validated as a UUID (case-insensitively) before it is looked up, let alone
fetched, and is then used exactly as sent (the key endpoint is case-sensitive); a kid has at most
one fetch in flight; at most ``max_fetches`` fetches start in any ``per_seconds`` window, plus as
many again for kids that were turned away by that budget and came back (so a flood of random
kids cannot starve the platform's new kid); a pinned key is kept for good; a fetched key is used
until a re-check says otherwise: the first use after ``key_ttl`` re-fetches it in the background
(that webhook does not wait), a 404 or unusable material then drops it, and while the re-check
runs or fails in any other way (retried at later uses, within the fetch budget) the key held is
used; every refusal cache is bounded; a verifier keeps only headers that passed every check
(by their exact segment, at most 64), and a header it does not keep is checked in full.

Answers, as the receiver maps them: a kid the API does not serve *yet* (404, never seen before)
is :class:`KeyUnavailableError` (503, the platform retries) and is asked again after
``negative_ttl`` seconds (3 by default); a spent fetch budget or a key endpoint in trouble is
:class:`KeyUnavailableError` too; a key the API served before and now answers 404 for (revoked),
unusable key material, or a kid with no fetch configured is :class:`SignatureError` (401).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ._ttl import TTLMap
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
    MAX_SIGNATURE_HEADER_LENGTH,
    SUPPORTED_ALGORITHMS,
    DetachedSignature,
    ProtectedHeader,
    _check_key,
    _verify_checked,
    b64url_decode,
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

_NOT_YET = "signing key not known yet; retry later"
_MAX_CHECKED_HEADERS = 64
"""Distinct protected headers a verifier keeps, checked (a signer uses one or a few)."""


class _Budget:
    """At most ``limit`` starts in any ``per_seconds`` window (a sliding log of start times)."""

    def __init__(self, limit: int, per_seconds: float) -> None:
        self.limit = limit
        self.per_seconds = per_seconds
        self._starts: deque[float] = deque()

    def take(self, now: float) -> bool:
        while self._starts and self._starts[0] <= now - self.per_seconds:
            self._starts.popleft()
        if len(self._starts) >= self.limit:
            return False
        self._starts.append(now)
        return True


class KeyStore:
    """RSA public keys by kid: pinned ones, and ones fetched once and cached.

    ``get`` raises ``SignatureError`` for a kid that is malformed or refused for good (revoked,
    unusable material, no ``fetch``), and ``KeyUnavailableError`` when the key cannot be had
    right now (not published yet, fetch budget spent, network or server trouble), so the
    platform's delivery is answered with a retryable status.
    """

    def __init__(
        self,
        fetch: KeyFetcher | None,
        *,
        pinned: Mapping[str, KeyMaterial] | None = None,
        negative_ttl: float = 3.0,
        unusable_ttl: float = 300.0,
        max_unknown: int = 4096,
        max_fetches: int = 10,
        per_seconds: float = 60.0,
        max_tracked: int = 10_000,
        key_ttl: float = 86400.0,
        fetch_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if negative_ttl < 0 or unusable_ttl < 0:
            raise ConfigurationError("negative_ttl and unusable_ttl must not be negative")
        if max_fetches < 0:
            raise ConfigurationError("max_fetches must not be negative")
        if per_seconds <= 0:
            raise ConfigurationError("per_seconds must be positive")
        if key_ttl <= 0:
            raise ConfigurationError("key_ttl must be positive")
        if max_unknown < 1 or max_tracked < 1:
            raise ConfigurationError("max_unknown and max_tracked must be positive")
        self._fetch = fetch
        self._key_ttl = key_ttl
        self._fetch_timeout = fetch_timeout
        self._expires: dict[str, float] = {}  # fetched keys only: pinned ones never expire
        self._negative_ttl = negative_ttl
        self._unusable_ttl = unusable_ttl
        self._clock = clock
        self._keys: dict[str, RSAPublicKey] = {}
        # kid -> True when refused for good (401), False when not served yet (503)
        self._unknown: TTLMap[bool] = TTLMap(negative_ttl, max_unknown, clock)
        self._inflight: dict[str, asyncio.Task[RSAPublicKey]] = {}
        self._budget = _Budget(max_fetches, per_seconds)
        # Kids the budget turned away: one that comes back (the platform retries; random flood
        # kids do not) may use a second budget of the same size.
        self._turned_away: OrderedDict[str, None] = OrderedDict()
        self._max_tracked = max_tracked
        self._retry_budget = _Budget(max_fetches, per_seconds)
        for kid, material in (pinned or {}).items():
            self.add(kid, material)

    def add(self, kid: str, material: KeyMaterial) -> None:
        """Pin ``material`` as the key for ``kid`` (exactly as the platform sends it);
        ``ConfigurationError`` when unacceptable."""
        try:
            kid = check_kid(kid)
        except SignatureError:
            raise ConfigurationError("pinned key id is not a UUID") from None
        try:
            key = load_public_key(material)
        except SignatureError as exc:
            raise ConfigurationError(f"pinned key {kid}: {exc}") from None
        self._keys[kid] = key
        self._expires.pop(kid, None)  # pinned: never re-checked
        self._unknown.pop(kid)

    async def get(self, kid: str) -> RSAPublicKey:
        """The key for ``kid``, fetching it at most once however many callers ask together.

        A fetched key is checked again in the background once ``key_ttl`` has passed (a key
        the API no longer serves then stops being trusted); meanwhile, and while the API
        cannot answer that check, the key it gave before is used."""
        known = self.held(kid)
        if known is not None:
            return known
        kid = check_kid(kid)  # before anything else: a kid goes into a URL
        task = self._inflight.get(kid) or self._start_fetch(kid)
        # shield: a caller that is cancelled leaves the shared fetch running for the others.
        return await asyncio.shield(task)

    def held(self, kid: str) -> RSAPublicKey | None:
        """The key for ``kid`` when it is held already (pinned, or fetched before), else None:
        :meth:`get` without a wait, for the receiving path. Starts the background re-check
        of a fetched key past ``key_ttl`` (so it needs a running loop then)."""
        known = self._keys.get(kid) if isinstance(kid, str) else None
        if known is None:
            return None
        expires = self._expires.get(kid)
        if expires is not None and self._clock() >= expires and kid not in self._inflight:
            # Re-check in the background: the webhook being verified does not wait for it.
            with contextlib.suppress(SignatureError, KeyUnavailableError):
                self._start_fetch(kid)
        return known

    def _start_fetch(self, kid: str) -> asyncio.Task[RSAPublicKey]:
        now = self._clock()
        final = self._unknown.get(kid)
        if final is not None:
            if final:
                raise SignatureError("unknown signing key")
            raise KeyUnavailableError(_NOT_YET)
        if self._fetch is None:
            raise SignatureError("unknown signing key")
        if not self._budget.take(now):
            came_back = self._turned_away.pop(kid, False) is None
            if not (came_back and self._retry_budget.take(now)):
                self._track_turned_away(kid)
                raise KeyUnavailableError("too many signing key fetches; retry later")
        task = asyncio.get_running_loop().create_task(self._load(kid, self._fetch))
        self._inflight[kid] = task
        task.add_done_callback(functools.partial(self._fetch_done, kid))
        return task

    def _track_turned_away(self, kid: str) -> None:
        self._turned_away[kid] = None
        self._turned_away.move_to_end(kid)
        while len(self._turned_away) > self._max_tracked:
            self._turned_away.popitem(last=False)

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
            if self._forget(kid):  # served before, not any more: revoked
                raise SignatureError("unknown signing key") from None
            # Never served: most likely a rotation the key endpoint has not caught up with.
            self._unknown.put(kid, False, self._negative_ttl)
            raise KeyUnavailableError(_NOT_YET) from None
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

    def _forget(self, kid: str) -> bool:
        """The API does not (or no longer) serve a usable key for ``kid``: refuse it for
        ``unusable_ttl``. True when a fetched key was dropped."""
        dropped = kid in self._expires  # a fetched key, never a pinned one
        if dropped:
            del self._expires[kid]
            del self._keys[kid]
        if self._unusable_ttl > 0:
            self._unknown.put(kid, True, self._unusable_ttl)
        return dropped


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
        # Protected headers that passed every check, by their exact segment: a signer sends
        # the same one with every webhook. Only a header checked in full enters; the map is
        # emptied when full, so distinct headers (a flood) cannot grow it.
        self._checked: dict[str, ProtectedHeader] = {}
        self._checked_key: RSAPublicKey | None = None  # the key verify_held last checked

    @property
    def algorithms(self) -> frozenset[str]:
        return self._algorithms

    def parse(self, signature_header: str | None) -> DetachedSignature:
        """Check the header alone (present, well-formed, allowed alg, kid a UUID): pure, so a
        receiver can refuse a request before reading its body. ``SignatureError`` otherwise."""
        if not signature_header:
            raise SignatureError("missing JWS-SIGNATURE header")
        # A header checked before, in the one shape parse_signature accepts ("<header>..<sig>":
        # a checked segment holds no dot): only the signature is left to decode.
        segment, _, encoded = signature_header.partition("..")
        header = self._checked.get(segment)
        if (
            header is not None
            and len(signature_header) <= MAX_SIGNATURE_HEADER_LENGTH
            and "." not in encoded
        ):
            try:
                signature = b64url_decode(encoded)
            except ValueError:
                signature = b""  # parse_signature says why
            if signature:
                return DetachedSignature(header, signature)
        sig = parse_signature(signature_header, algorithms=self._algorithms, require_kid=True)
        if len(self._checked) >= _MAX_CHECKED_HEADERS:
            self._checked.clear()
        self._checked[sig.header.encoded] = sig.header
        return sig

    async def verify(self, signature_header: str | None, body: bytes) -> ProtectedHeader:
        """Return the protected header when the signature holds; raise ``SignatureError`` or
        ``KeyUnavailableError`` otherwise. The header is fully checked before any key lookup."""
        return await self.verify_parsed(self.parse(signature_header), body)

    async def verify_parsed(self, sig: DetachedSignature, body: bytes) -> ProtectedHeader:
        """:meth:`verify` for a header :meth:`parse` gave (a receiver parses it before reading
        the body, and need not parse it twice)."""
        header = self.verify_held(sig, body)
        if header is None:  # a kid not seen before: fetch its key (once, for every caller)
            header = self._verify_with(sig, body, await self._keys.get(self._kid(sig)))
        return header

    def verify_held(self, sig: DetachedSignature, body: bytes) -> ProtectedHeader | None:
        """:meth:`verify_parsed` without a wait: the protected header when the signature holds
        with a key already held, None when the key must be fetched first (then await
        :meth:`verify_parsed`); ``SignatureError`` when it does not hold."""
        kid = sig.header.kid
        if kid is None or sig.header.alg not in self._algorithms:
            kid = self._kid(sig)  # raises, saying why
        key = self._keys.held(kid)
        if key is None:
            return None
        if key is not self._checked_key:  # RSA, long enough: checked once per key in a row
            self._checked_key = _check_key(key)
        _verify_checked(sig, body, key)
        return sig.header

    def _kid(self, sig: DetachedSignature) -> str:
        if sig.header.alg not in self._algorithms:  # a header parsed under other rules
            raise SignatureError("algorithm not allowed")
        if sig.header.kid is None:  # parse_signature guarantees it; keeps the types honest
            raise SignatureError("header has no kid")
        return sig.header.kid

    @staticmethod
    def _verify_with(sig: DetachedSignature, body: bytes, key: RSAPublicKey) -> ProtectedHeader:
        verify_signature(sig, body, key)
        return sig.header
