"""Access and refresh tokens of the simulated API: opaque random strings with an expiry.

Invariants: a token is valid while ``clock() < expiry``; an access token issued "expired" gets
``expiry = clock()`` so it is refused from the first use; credentials are compared in constant
time; expired tokens are pruned in batches, so the store stays O(live tokens); a revoked token
is forgotten at once, so it is refused like one never issued (authorize always works).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

from ._wire import Reject

__all__ = ["TokenStore"]


class TokenStore:
    """Issues and checks tokens for one key/secret pair."""

    def __init__(
        self,
        *,
        key: str,
        secret: str,
        token_ttl: float,
        refresh_token_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key, self._secret = key.encode(), secret.encode()
        self._ttl, self._refresh_ttl, self._clock = token_ttl, refresh_token_ttl, clock
        self._access: dict[str, float] = {}
        self._refresh: dict[str, float] = {}
        self._prune_at = 1024
        self.revocations = 0
        """How many times `revoke` ran."""

    def authorize(self, key: str, secret: str, *, expired: bool = False) -> dict[str, Any]:
        key_ok = hmac.compare_digest(key.encode(), self._key)
        secret_ok = hmac.compare_digest(secret.encode(), self._secret)
        if not (key_ok and secret_ok):
            raise Reject(401, "wrong key or secret", error="invalid_credentials")
        return self._issue(expired)

    def refresh(self, refresh_token: str, *, expired: bool = False) -> dict[str, Any]:
        expiry = self._refresh.get(refresh_token)
        if expiry is None or expiry <= self._clock():
            message = "unknown, expired or revoked refresh token"
            raise Reject(401, message, error="invalid_refresh_token")
        return self._issue(expired)

    def revoke(self, *, refresh_tokens: bool = True) -> None:
        """Revoke every access token issued so far, and every refresh token unless told not to."""
        self._access.clear()
        if refresh_tokens:
            self._refresh.clear()
        self.revocations += 1

    def check_access(self, token: str) -> None:
        expiry = self._access.get(token)
        if expiry is None:
            raise Reject(401, "unknown or revoked access token", error="invalid_token")
        if expiry <= self._clock():
            raise Reject(401, "access token expired", error="token_expired")

    def _issue(self, expired: bool) -> dict[str, Any]:
        now = self._clock()
        if len(self._access) + len(self._refresh) >= self._prune_at:
            self._access = {t: e for t, e in self._access.items() if e > now}
            self._refresh = {t: e for t, e in self._refresh.items() if e > now}
            self._prune_at = max(1024, 2 * (len(self._access) + len(self._refresh)))
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        self._access[access] = now if expired else now + self._ttl
        self._refresh[refresh] = now + self._refresh_ttl
        ttl = self._ttl
        return {
            "accessToken": access,
            "refreshToken": refresh,
            "expiryDuration": int(ttl) if ttl == int(ttl) else ttl,
            "tokenType": "Bearer",
        }
