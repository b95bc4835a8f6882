"""Organization tokens and permission scopes of the simulated API.

Invariants: an organization token (``tot_...``) is accepted only as the whole Authorization
header, a JWT-style access token only as ``Bearer <token>`` (each refused in the other form with
a 401 that says so); a token minted without scopes may do everything; a missing scope is a 403
whose JSON body names the permission (``{"error": "forbidden", "permission": "can_run"}``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from ._request_keys import PRINCIPAL
from ._tokens import TokenStore
from ._wire import Reject, parse_bearer

__all__ = ["OrgTokenStore", "Principal", "authenticate", "require"]

PREFIX = "tot_"
PERMISSIONS = ("can_run", "can_view_workspace", "can_create_records", "can_view_records")
"""The permissions the Simulator checks (see README: which call needs which)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``scopes`` None means every permission on every resource."""

    kind: str  # "organization" or "access"
    scopes: frozenset[str] | None = None

    def allows(self, permission: str, resource: str | None) -> bool:
        if self.scopes is None:
            return True
        return permission in self.scopes or f"{permission}:{resource}" in self.scopes


_ALL = Principal("access")


class OrgTokenStore:
    """Organization tokens minted by the test, each with its scopes; revocable."""

    def __init__(self) -> None:
        self._tokens: dict[str, frozenset[str] | None] = {}

    def mint(self, scopes: Iterable[str] | None = None) -> str:
        """A new ``tot_...`` token. ``scopes``: None for every permission, else names like
        ``"can_run"`` (on everything) or ``"can_run:kyc-basic"`` (on one definition/table)."""
        if isinstance(scopes, str):
            raise TypeError("scopes must be an iterable of names, not one string")
        granted = None if scopes is None else frozenset(scopes)
        for scope in granted or ():
            if scope.partition(":")[0] not in PERMISSIONS:
                raise ValueError(f"unknown permission in scope {scope!r}; known: {PERMISSIONS}")
        token = PREFIX + secrets.token_urlsafe(24)
        self._tokens[token] = granted
        return token

    def revoke(self, token: str) -> None:
        self._tokens.pop(token, None)

    def principal(self, token: str) -> Principal:
        if token not in self._tokens:
            raise Reject(401, "unknown or revoked organization token", error="invalid_token")
        return Principal("organization", self._tokens[token])


def authenticate(header: str | None, tokens: TokenStore, org_tokens: OrgTokenStore) -> Principal:
    """The caller of an API route, from its Authorization header; a `Reject` (401) otherwise."""
    value = (header or "").strip()
    scheme, _, rest = value.partition(" ")
    if value.startswith(PREFIX):
        return org_tokens.principal(value)
    if scheme.lower() == "bearer" and rest.strip().startswith(PREFIX):
        raise Reject(
            401,
            "an organization token goes in the Authorization header as it is, without 'Bearer '",
            error="invalid_token",
        )
    if value and scheme.lower() != "bearer":
        raise Reject(
            401, "an access token must be sent as 'Bearer <accessToken>'", error="invalid_token"
        )
    tokens.check_access(parse_bearer(header))
    return _ALL


def require(request: web.Request, permission: str, resource: str | None = None) -> None:
    """403 naming ``permission`` unless the caller holds it (on ``resource`` when given)."""
    principal = request.get(PRINCIPAL)
    if isinstance(principal, Principal) and not principal.allows(permission, resource):
        on = f" on {resource}" if resource else ""
        raise Reject(
            403,
            f"the token lacks the permission {permission}{on}",
            error="forbidden",
            extra={"permission": permission},
        )
