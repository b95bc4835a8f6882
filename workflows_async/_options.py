"""The keyword options of ``Session(...)``, as a TypedDict, so ``Session.from_env(**options)``
is checked like the constructor: a misspelt option is a type error, and a ``ConfigurationError``
at run time.

Invariant: the keys are exactly the constructor's keyword parameters (a test compares them).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from .errors import ConfigurationError

if TYPE_CHECKING:
    import aiohttp

    from ._retry import RetryPolicy
    from .auth import Auth
    from .bus import Bus
    from .keys import KeyMaterial
    from .polling import PollPolicy
    from .statuses import StatusSet

__all__ = ["SessionOptions", "check_options"]


class SessionOptions(TypedDict, total=False):
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
    verify_webhooks: bool
    force_unverified: bool
    webhook_keys: Mapping[str, KeyMaterial] | None
    fetch_webhook_keys: bool | None
    webhook_algorithms: Collection[str]
    max_webhook_body: int
    max_response_body: int
    opentelemetry: bool | None
    tracer_provider: Any
    meter_provider: Any
    lost_webhook_grace: float


def check_options(options: Mapping[str, object]) -> None:
    """Refuse an option ``Session`` does not have, naming the closest one it does."""
    known = SessionOptions.__optional_keys__
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(f"unknown Session option {name!r}{hint}")
