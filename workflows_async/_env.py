"""The ``WORKFLOWS_*`` environment variables and the rules for reading them: one home, shared by
``Session.from_env`` and the ``workflows-async`` command, so the two cannot drift apart.

Rule 1 (credentials, first found wins): an organization token in ``WORKFLOWS_ORG_TOKEN``, or a
``tot_...`` value in ``WORKFLOWS_TOKEN``; then (legacy) ``WORKFLOWS_API_KEY`` with
``WORKFLOWS_API_SECRET``; then a JWT access token in ``WORKFLOWS_TOKEN``. Two different
organization tokens are refused; half a key pair or a blank token is no credential.
Rule 2: ``WORKFLOWS_API_VERSION``, when set, is a positive integer in ASCII digits.
Rule 3: no variable allows plain ``http://``; only the caller's explicit
``allow_insecure_http=True`` (``--insecure-http``) does, so a stray variable cannot turn TLS off.

Invariants: pure: every function reads only the mapping it is given (never ``os.environ``) and
imports nothing but the errors module, so the command can name these variables before it loads
aiohttp or the Session; ``auth.auth_for`` turns a :class:`Credentials` into an Auth. An error
names variables, never their values. ``WORKFLOWS_LOG`` is applied by ``_logging``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from .errors import ConfigurationError

__all__ = [
    "API_KEY",
    "API_SECRET",
    "API_VERSION",
    "BASE_URL",
    "LOG",
    "ORGANIZATION_TOKEN_PREFIX",
    "ORG_TOKEN",
    "TOKEN",
    "Credentials",
    "api_version",
    "base_url",
    "credentials",
    "is_organization_token",
    "require_credentials",
]

BASE_URL = "WORKFLOWS_BASE_URL"
ORG_TOKEN = "WORKFLOWS_ORG_TOKEN"  # noqa: S105 - a variable's name, not a secret
TOKEN = "WORKFLOWS_TOKEN"  # noqa: S105 - a variable's name, not a secret
API_KEY = "WORKFLOWS_API_KEY"
API_SECRET = "WORKFLOWS_API_SECRET"  # noqa: S105 - a variable's name, not a secret
API_VERSION = "WORKFLOWS_API_VERSION"
LOG = "WORKFLOWS_LOG"

ORGANIZATION_TOKEN_PREFIX = "tot_"  # noqa: S105 - a prefix, not a secret

NO_CREDENTIALS = (
    f"no credentials: set {ORG_TOKEN} (an organization token, tot_...), or "
    f"(legacy) {API_KEY} and {API_SECRET}, or {TOKEN}"
)

Kind = Literal["organization_token", "key_secret", "token"]


def is_organization_token(token: str) -> bool:
    """True for a ``tot_...`` organization token (as found e.g. in ``WORKFLOWS_TOKEN``)."""
    return token.strip().startswith(ORGANIZATION_TOKEN_PREFIX)


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """Which credential was found, and its values (never in the repr)."""

    kind: Kind
    token: str = dataclasses.field(default="", repr=False)
    key: str = dataclasses.field(default="", repr=False)
    secret: str = dataclasses.field(default="", repr=False)

    @classmethod
    def for_token(cls, token: str) -> Credentials:
        """A token as given: an organization token by its ``tot_`` prefix, else a JWT."""
        return cls("organization_token" if is_organization_token(token) else "token", token=token)


def credentials(env: Mapping[str, str]) -> Credentials | None:
    """The credential rule 1 picks from ``env``, or None when it holds none."""
    key, secret = env.get(API_KEY), env.get(API_SECRET)
    token = (env.get(TOKEN) or "").strip()
    org_token = (env.get(ORG_TOKEN) or "").strip()
    if org_token and token and is_organization_token(token) and token != org_token:
        raise ConfigurationError(f"{ORG_TOKEN} and {TOKEN} hold different tokens")
    if org_token:
        return Credentials("organization_token", token=org_token)
    if token and is_organization_token(token):
        return Credentials("organization_token", token=token)
    if key and secret:
        return Credentials("key_secret", key=key, secret=secret)
    if token:
        return Credentials("token", token=token)
    return None


def require_credentials(env: Mapping[str, str]) -> Credentials:
    """As :func:`credentials`, but none is a ConfigurationError saying what to set."""
    found = credentials(env)
    if found is not None:
        return found
    if env.get(API_KEY) or env.get(API_SECRET):
        raise ConfigurationError(f"set both {API_KEY} and {API_SECRET}")
    raise ConfigurationError(NO_CREDENTIALS)


def base_url(env: Mapping[str, str]) -> str:
    """``WORKFLOWS_BASE_URL``, or ``""`` (the Session then says it is required)."""
    return env.get(BASE_URL, "")


def api_version(env: Mapping[str, str]) -> int | None:
    """``WORKFLOWS_API_VERSION`` as a number, or None when it is not set (rule 2)."""
    text = env.get(API_VERSION)
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise ConfigurationError(f"{API_VERSION} must be a positive integer")
    return int(text)
