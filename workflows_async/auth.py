"""Authentication: an organization token (sent as it is), a fixed JWT bearer token, or (legacy)
key + secret with tokens that refresh themselves.

Invariants: at most ONE token request is in flight per auth object, however many calls need a
token at once, and the calls waiting for it share its outcome (a failure is not repeated by
each of them); a rejected token causes at most one refresh per call (never a loop); no key,
secret or token ever appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import msgspec

from ._http import HttpClient
from .errors import APIError, ConfigurationError, DecodeError
from .models import Token

__all__ = [
    "ORGANIZATION_TOKEN_PREFIX",
    "Auth",
    "KeySecretAuth",
    "OrganizationTokenAuth",
    "TokenAuth",
    "auth_from_env",
    "is_organization_token",
]

_TOKEN_DECODER = msgspec.json.Decoder(Token)


class Auth(Protocol):
    """What a Session needs from an authentication method."""

    async def token(self, http: HttpClient) -> str:
        """A bearer token to send now."""
        ...

    async def on_unauthorized(self, http: HttpClient, rejected: str) -> bool:
        """The API refused ``rejected`` with 401: renew it; True when a retry may succeed."""
        ...


class TokenAuth:
    """A fixed JWT bearer token obtained elsewhere (legacy), sent as ``Bearer <token>``.
    A 401 is final: :class:`CredentialsError`. An organization token (``tot_...``) is refused
    here: use :class:`OrganizationTokenAuth`, which sends it without ``Bearer``."""

    bearer = True
    refused_detail = "the access token was refused and this auth cannot renew it"

    def __init__(self, token: str) -> None:
        if not token or not isinstance(token, str):
            raise ConfigurationError("TokenAuth needs a non-empty token")
        if token.startswith(ORGANIZATION_TOKEN_PREFIX):
            raise ConfigurationError(
                "this is an organization token (tot_...): use OrganizationTokenAuth, "
                "which sends it without 'Bearer '"
            )
        _check_header_safe(token, "TokenAuth")
        self._token = token

    async def token(self, http: HttpClient) -> str:
        return self._token

    async def on_unauthorized(self, http: HttpClient, rejected: str) -> bool:
        return False

    def __repr__(self) -> str:
        return "TokenAuth(token=***)"


ORGANIZATION_TOKEN_PREFIX = "tot_"  # noqa: S105 - a prefix, not a secret


def _check_header_safe(token: str, what: str) -> None:
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigurationError(f"{what}: the token must be printable ASCII without spaces")


class OrganizationTokenAuth:
    """An organization token (``tot_...``, made in the dashboard): the recommended credential.

    It is sent as it is, ``Authorization: tot_...``, without ``Bearer ``. It has no renewal: a
    401 is final and raises :class:`CredentialsError` (revoked, expired or mistyped token); a
    403 means the token lacks a permission scope (:class:`PermissionDeniedError`).
    """

    bearer = False
    refused_detail = (
        "the organization token was refused (revoked, expired or wrong); organization tokens "
        "cannot be renewed: check or replace it in the dashboard"
    )

    def __init__(self, token: str) -> None:
        if not token or not isinstance(token, str):
            raise ConfigurationError("OrganizationTokenAuth needs a non-empty token")
        token = token.strip()
        if token.lower().startswith("bearer "):
            raise ConfigurationError(
                "pass the organization token itself (tot_...), without 'Bearer '"
            )
        if not token.startswith(ORGANIZATION_TOKEN_PREFIX) or len(token) <= 4:
            raise ConfigurationError(
                "an organization token starts with 'tot_'; for a JWT access token use "
                "TokenAuth, for a key and secret KeySecretAuth"
            )
        _check_header_safe(token, "OrganizationTokenAuth")
        self._token = token

    async def token(self, http: HttpClient) -> str:
        return self._token

    async def on_unauthorized(self, http: HttpClient, rejected: str) -> bool:
        return False  # nothing to renew

    def __repr__(self) -> str:
        return "OrganizationTokenAuth(token=***)"


def is_organization_token(token: str) -> bool:
    """True for a ``tot_...`` organization token (as found e.g. in ``WORKFLOWS_TOKEN``)."""
    return token.strip().startswith(ORGANIZATION_TOKEN_PREFIX)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a renewal's failure as seen: its callers got it, or none was left to care."""
    if not task.cancelled():
        task.exception()


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix time) of a JWT, read without trusting it for anything else."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(segment))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


class KeySecretAuth:
    """Legacy (prefer :class:`OrganizationTokenAuth`): JWT bearer tokens from
    ``POST /auth/authorize`` with key and secret; ``POST /auth/refresh`` before expiry.

    The expiry comes from the access token's ``exp`` claim when it is a JWT, otherwise from
    ``expiryDuration`` read as seconds. The token is renewed ``refresh_margin`` seconds early,
    and whenever the API answers 401. A failed refresh falls back to a new authorization.
    """

    bearer = True

    def __init__(
        self,
        key: str,
        secret: str,
        *,
        refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not key or not secret:
            raise ConfigurationError("KeySecretAuth needs a non-empty key and secret")
        self._key = key
        self._secret = secret
        self._margin = refresh_margin
        self._clock = clock
        self._wall_clock = wall_clock
        self._access: str | None = None
        self._refresh: str | None = None
        self._renew_at: float | None = None
        self._renewal: asyncio.Task[None] | None = None
        self.token_requests = 0
        """How many authorize/refresh requests were sent (for tests and monitoring)."""

    def __repr__(self) -> str:
        return "KeySecretAuth(key=***, secret=***)"

    def _fresh(self) -> bool:
        if self._access is None:
            return False
        return self._renew_at is None or self._clock() < self._renew_at

    async def token(self, http: HttpClient) -> str:
        if self._fresh():
            assert self._access is not None
            return self._access
        return await self._renewed(http)

    async def on_unauthorized(self, http: HttpClient, rejected: str) -> bool:
        if self._access is not None and self._access != rejected:
            return True  # renewed since that call was sent
        await self._renewed(http)
        return True

    async def _renewed(self, http: HttpClient) -> str:
        """Join the renewal in flight, or start one: every caller waiting at the same time
        shares one token request and its outcome, success or error."""
        task = self._renewal
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._renew(http))
            task.add_done_callback(_retrieve)
            self._renewal = task
        await asyncio.shield(task)  # a caller that gives up leaves the renewal to the others
        assert self._access is not None
        return self._access

    async def _renew(self, http: HttpClient) -> None:
        if self._refresh is not None:
            try:
                await self._request(http, "/auth/refresh", {"refreshToken": self._refresh})
                return
            except (APIError, DecodeError):
                self._refresh = None  # refused or unreadable: start over with the key
        await self._request(http, "/auth/authorize", {"key": self._key, "secret": self._secret})

    async def _request(self, http: HttpClient, path: str, payload: dict[str, str]) -> None:
        self.token_requests += 1
        response = await http.request("POST", path, body=msgspec.json.encode(payload))
        try:
            token = _TOKEN_DECODER.decode(response.body)
        except msgspec.DecodeError:
            raise DecodeError(f"POST {path} answered a body that is not a token") from None
        now = self._clock()
        self._access = token.access_token
        self._refresh = token.refresh_token or self._refresh
        lifetime: float | None = None
        exp = jwt_expiry(token.access_token)
        if exp is not None:
            lifetime = exp - self._wall_clock()
        if (lifetime is None or lifetime <= 0) and token.expiry_duration:
            lifetime = float(token.expiry_duration)  # e.g. a local clock ahead of the server's
        if lifetime is not None and lifetime <= 0:
            lifetime = None  # nothing plausible: renewed when the API answers 401
        if lifetime is None:
            self._renew_at = None
        else:
            # Renew early, but never so early that a short-lived token is renewed at every call.
            self._renew_at = now + lifetime - min(self._margin, max(lifetime, 0.0) / 2)


def auth_from_env(source: Mapping[str, str]) -> Auth:
    """The credentials ``Session.from_env`` picks (see there); ConfigurationError if none."""
    key, secret = source.get("WORKFLOWS_API_KEY"), source.get("WORKFLOWS_API_SECRET")
    token = (source.get("WORKFLOWS_TOKEN") or "").strip()
    org_token = (source.get("WORKFLOWS_ORG_TOKEN") or "").strip()
    if org_token and token and is_organization_token(token) and token != org_token:
        raise ConfigurationError("WORKFLOWS_ORG_TOKEN and WORKFLOWS_TOKEN hold different tokens")
    if org_token:
        return OrganizationTokenAuth(org_token)
    if token and is_organization_token(token):
        return OrganizationTokenAuth(token)
    if key and secret:
        return KeySecretAuth(key, secret)
    if token:
        return TokenAuth(token)
    if key or secret:
        raise ConfigurationError("set both WORKFLOWS_API_KEY and WORKFLOWS_API_SECRET")
    raise ConfigurationError(
        "no credentials: set WORKFLOWS_ORG_TOKEN (an organization token, tot_...), or "
        "(legacy) WORKFLOWS_API_KEY and WORKFLOWS_API_SECRET, or WORKFLOWS_TOKEN"
    )
