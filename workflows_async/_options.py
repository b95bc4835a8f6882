"""What ``Session(...)`` is configured with: the webhook settings as one frozen object
(:class:`WebhookSettings`), and every keyword option as a TypedDict (``SessionOptions``), so
``Session.from_env(**options)`` is checked like the constructor: a misspelt option is a type
error, and a ``ConfigurationError`` at run time.

Invariants: the keys of ``SessionOptions`` are exactly the constructor's named keyword
parameters plus the older webhook keywords (``WebhookKeywords``) its ``**`` parameter takes (a
test compares them); each older keyword maps onto one ``WebhookSettings`` field, and passing
one together with ``webhooks=`` is a ``ConfigurationError``; a ``WebhookSettings`` holds no
mutable value (keys and algorithms are copied when it is made).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypedDict

from .errors import ConfigurationError
from .jws import DEFAULT_ALGORITHMS

if TYPE_CHECKING:
    import aiohttp

    from ._retry import RetryPolicy
    from .auth import Auth
    from .bus import Bus
    from .keys import KeyMaterial
    from .polling import PollPolicy
    from .statuses import StatusSet

__all__ = [
    "SessionOptions",
    "WebhookKeywords",
    "WebhookSettings",
    "check_options",
    "webhook_settings",
]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    """How a Session receives webhooks: ``Session(url, auth, webhooks=WebhookSettings(...))``.

    ``verify``: check every webhook's ``JWS-SIGNATURE`` against the API's signing keys, fetched
    by kid. False is for local development only, and is refused for a non-local API unless
    ``force_unverified``. ``keys={kid: PEM or JWK}`` pins keys up front; then only those are
    trusted unless ``fetch_keys=True`` (None: fetch unknown kids only when nothing is pinned).
    ``algorithms``: the signature algorithms accepted (RS256 by default). ``max_body``: the
    largest body accepted, in bytes (larger ones are answered 413). ``lost_grace``: seconds a
    webhook has to arrive after a poll found its workflow ended, before it counts in
    ``stats().webhooks.lost``.
    """

    verify: bool = True
    force_unverified: bool = False
    keys: Mapping[str, KeyMaterial] | None = None
    fetch_keys: bool | None = None
    algorithms: Collection[str] = DEFAULT_ALGORITHMS
    max_body: int = 1 << 20
    lost_grace: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.algorithms, str):
            raise ConfigurationError("WebhookSettings.algorithms must be a collection of names")
        object.__setattr__(self, "algorithms", frozenset(self.algorithms))
        if self.keys is not None:
            object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        size = self.max_body
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError("WebhookSettings.max_body must be a positive number of bytes")
        if isinstance(self.lost_grace, bool) or not self.lost_grace >= 0:
            raise ConfigurationError("WebhookSettings.lost_grace must be a number of seconds >= 0")


class WebhookKeywords(TypedDict, total=False):
    """The webhook keywords ``Session`` took before :class:`WebhookSettings`; still accepted,
    each one mapped onto its field (see ``_LEGACY``)."""

    verify_webhooks: bool
    force_unverified: bool
    webhook_keys: Mapping[str, KeyMaterial] | None
    fetch_webhook_keys: bool | None
    webhook_algorithms: Collection[str]
    max_webhook_body: int
    lost_webhook_grace: float


_LEGACY: dict[str, str] = {
    "verify_webhooks": "verify",
    "force_unverified": "force_unverified",
    "webhook_keys": "keys",
    "fetch_webhook_keys": "fetch_keys",
    "webhook_algorithms": "algorithms",
    "max_webhook_body": "max_body",
    "lost_webhook_grace": "lost_grace",
}
"""Older Session keyword -> WebhookSettings field."""


class SessionOptions(WebhookKeywords, total=False):
    """Every keyword of ``Session(...)``; see its docstring for what each one does."""

    base_url: str
    auth: Auth | None
    api_version: int | None
    timeout: float
    retry: RetryPolicy | None
    http_session: aiohttp.ClientSession | None
    allow_insecure_http: bool
    user_agent: str | None
    statuses: StatusSet | None
    poll: PollPolicy | None
    bus: Bus | None
    webhooks: WebhookSettings | None
    max_response_body: int
    opentelemetry: bool | None
    tracer_provider: Any
    meter_provider: Any


def _hint(name: str) -> str:
    close = difflib.get_close_matches(name, SessionOptions.__optional_keys__, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_options(options: Mapping[str, object]) -> None:
    """Refuse an option ``Session`` does not have, naming the closest one it does."""
    for name in options:
        if name not in SessionOptions.__optional_keys__:
            raise ConfigurationError(f"unknown Session option {name!r}{_hint(name)}")


def webhook_settings(
    webhooks: WebhookSettings | None, keywords: Mapping[str, Any]
) -> WebhookSettings:
    """The settings a Session receives webhooks with: ``webhooks``, or the older keywords
    mapped onto a new one. An unknown keyword is a TypeError, as Python would raise it."""
    for name in keywords:
        if name not in _LEGACY:
            raise TypeError(f"Session() got an unexpected keyword argument {name!r}{_hint(name)}")
    if webhooks is not None and not isinstance(webhooks, WebhookSettings):
        raise ConfigurationError("webhooks must be a WebhookSettings")
    if not keywords:
        return webhooks if webhooks is not None else WebhookSettings()
    if webhooks is not None:
        raise ConfigurationError(
            f"pass webhooks=WebhookSettings(...) or {', '.join(sorted(keywords))}, not both"
        )
    return WebhookSettings(**{_LEGACY[name]: value for name, value in keywords.items()})
