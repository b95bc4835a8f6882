"""Authentication: an organization token (sent as it is, the recommended credential), a fixed
JWT bearer token, or (legacy) key + secret with tokens that renew themselves.

An auth does no HTTP of its own: it gives the ``Authorization`` header value to send, and when
the API refused one with 401 it gives the value to resend with (renewing through the
``TokenRequest`` it is handed), in the manner of httpx's auth flow. ``_http.py`` does the sending.

Invariants: at most ONE token request is in flight per auth object, however many calls need a
token at once, and the calls waiting for it share its outcome (a failure is not repeated by
each of them); a renewal happens only for a value the API refused that is still the current one;
no key, secret or token ever appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import msgspec

from ._env import (
    ORGANIZATION_TOKEN_PREFIX,
    Credentials,
    is_organization_token,
    require_credentials,
)
from .errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    CredentialsError,
    DecodeError,
    PermissionDeniedError,
)
from .models import Token

__all__ = [
    "ORGANIZATION_TOKEN_PREFIX",
    "Auth",
    "KeySecretAuth",
    "OrganizationTokenAuth",
    "TokenAuth",
    "TokenRequest",
    "auth_from_env",
    "is_organization_token",
]

_TOKEN_DECODER = msgspec.json.Decoder(Token)

TokenRequest = Callable[[str, bytes], Awaitable[bytes]]
"""How an auth asks the API for a token: ``await send(path, json_body)`` POSTs the body to
``path`` without an Authorization header (retried on 5xx, 429 and connection errors, like a
GET: a token request has no effect to duplicate) and returns the 2xx body, or raises a
:class:`~workflows_async.errors.WorkflowsError`."""


class Auth(Protocol):
    """What the HTTP client needs from an authentication method: implement these two methods
    to bring your own (both names, ``Auth`` and ``TokenRequest``, are exported by the package).
    The client takes the value for every request as it goes out and handles the 401s."""

    async def authorization(self, send: TokenRequest) -> str:
        """The ``Authorization`` header value to send now, e.g. ``"Bearer <token>"``."""
        ...

    async def renew(self, send: TokenRequest, rejected: str) -> str | None:
        """The API answered 401 to a request sent with ``rejected`` (a value this auth gave).

        Return the value to resend with: the current one if it differs from ``rejected``
        (renewed meanwhile), otherwise a renewed one (joining a renewal in flight). None when
        this auth cannot renew: the 401 is then final.
        """
        ...


class TokenAuth:
    """A fixed JWT bearer token obtained elsewhere (legacy), sent as ``Bearer <token>``. It
    cannot be renewed: a 401 raises :class:`~workflows_async.errors.CredentialsError`. An
    organization token (``tot_...``) is refused here: use :class:`OrganizationTokenAuth`, which
    sends it without ``Bearer``."""

    def __init__(self, token: str) -> None:
        if not token or not isinstance(token, str):
            raise ConfigurationError("TokenAuth needs a non-empty token")
        if token.startswith(ORGANIZATION_TOKEN_PREFIX):
            raise ConfigurationError(
                "this is an organization token (tot_...): use OrganizationTokenAuth, "
                "which sends it without 'Bearer '"
            )
        _check_header_safe(token, "TokenAuth")
        self._value = f"Bearer {token}"

    async def authorization(self, send: TokenRequest) -> str:
        return self._value

    async def renew(self, send: TokenRequest, rejected: str) -> str | None:
        return None

    def __repr__(self) -> str:
        return "TokenAuth(token=***)"


def _check_header_safe(token: str, what: str) -> None:
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigurationError(f"{what}: the token must be printable ASCII without spaces")


class OrganizationTokenAuth:
    """An organization token (``tot_...``, made in the dashboard): the recommended credential.

    It is sent as it is, ``Authorization: tot_...``, without ``Bearer ``. It has no renewal: a
    401 is final and raises :class:`~workflows_async.errors.CredentialsError` (revoked, expired
    or mistyped token); a 403 means the token lacks a permission scope
    (:class:`~workflows_async.errors.PermissionDeniedError`, naming it).
    """

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
        self._value = token

    async def authorization(self, send: TokenRequest) -> str:
        return self._value  # as it is: no "Bearer "

    async def renew(self, send: TokenRequest, rejected: str) -> str | None:
        return None  # nothing to renew: the 401 is final

    def __repr__(self) -> str:
        return "OrganizationTokenAuth(token=***)"


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

    def __repr__(self) -> str:
        return "KeySecretAuth(key=***, secret=***)"

    def _fresh(self) -> bool:
        if self._access is None:
            return False
        return self._renew_at is None or self._clock() < self._renew_at

    def _current(self) -> str:
        assert self._access is not None
        return f"Bearer {self._access}"

    async def authorization(self, send: TokenRequest) -> str:
        if not self._fresh():
            await self._renewed(send)
        return self._current()

    async def renew(self, send: TokenRequest, rejected: str) -> str | None:
        if self._access is not None and self._current() != rejected:
            return self._current()  # renewed since that call was sent
        await self._renewed(send)
        return self._current()

    async def _renewed(self, send: TokenRequest) -> None:
        """Join the renewal in flight, or start one: every caller waiting at the same time
        shares one token request and its outcome, success or error."""
        task = self._renewal
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._renew(send))
            task.add_done_callback(_retrieve)
            self._renewal = task
        await asyncio.shield(task)  # a caller that gives up leaves the renewal to the others

    async def _renew(self, send: TokenRequest) -> None:
        if self._refresh is not None:
            try:
                await self._request(send, "/auth/refresh", {"refreshToken": self._refresh})
                return
            except (APIError, DecodeError):
                self._refresh = None  # refused or unreadable: start over with the key
        try:
            await self._request(send, "/auth/authorize", {"key": self._key, "secret": self._secret})
        except (AuthenticationError, PermissionDeniedError) as refused:
            raise CredentialsError(
                refused.status,
                method=refused.method,
                path=refused.path,
                body_excerpt=refused.body_excerpt,
                request_id=refused.request_id,
                detail="the key and secret were refused",
                code=refused.code,
            ) from None

    async def _request(self, send: TokenRequest, path: str, payload: dict[str, str]) -> None:
        body = await send(path, msgspec.json.encode(payload))
        try:
            token = _TOKEN_DECODER.decode(body)
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


def auth_for(credentials: Credentials) -> Auth:
    """The Auth that sends ``credentials`` (as the environment or a command line gave them)."""
    if credentials.kind == "organization_token":
        return OrganizationTokenAuth(credentials.token)
    if credentials.kind == "key_secret":
        return KeySecretAuth(credentials.key, credentials.secret)
    return TokenAuth(credentials.token)


def auth_from_env(source: Mapping[str, str]) -> Auth:
    """The credentials ``Session.from_env`` picks (the rules are in ``_env``); ConfigurationError
    if there are none."""
    return auth_for(require_credentials(source))
