"""Testing tools: `Simulator`, a stateful fake of the Workflows API that signs its webhooks.

Invariants: nothing here talks to anything but the addresses it is given (127.0.0.1 by default);
every name in ``__all__`` is public, stable and importable from ``workflows_async.testing``;
it loads on first use (PEP 562), so the pytest plugin in this package stays cheap to import.

    async with Simulator(time_scale=0.01, webhook_urls=[receiver_url]) as sim:
        ...  # point a client at sim.base_url with key=sim.key, secret=sim.secret
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .._serve import Served, serve
    from ._faults import Faults
    from ._records import Outcome, RequestRecord, WebhookAttempt
    from ._redis_server import RedisServer, RedisServerError
    from ._signing import generate_signing_key, public_key_pem, sign_webhook
    from ._simulator import Simulator
    from ._state import BUILTIN_DEFINITIONS, WorkflowDefinition, WorkflowInfo

__all__ = [
    "BUILTIN_DEFINITIONS",
    "Faults",
    "Outcome",
    "RedisServer",
    "RedisServerError",
    "RequestRecord",
    "Served",
    "Simulator",
    "WebhookAttempt",
    "WorkflowDefinition",
    "WorkflowInfo",
    "generate_signing_key",
    "public_key_pem",
    "serve",
    "sign_webhook",
]

_SOURCES: dict[str, str] = {
    "BUILTIN_DEFINITIONS": "._state",
    "Faults": "._faults",
    "Outcome": "._records",
    "RedisServer": "._redis_server",
    "RedisServerError": "._redis_server",
    "RequestRecord": "._records",
    "Served": ".._serve",
    "Simulator": "._simulator",
    "WebhookAttempt": "._records",
    "WorkflowDefinition": "._state",
    "WorkflowInfo": "._state",
    "generate_signing_key": "._signing",
    "public_key_pem": "._signing",
    "serve": ".._serve",
    "sign_webhook": "._signing",
}
"""Where each public name lives."""

if not TYPE_CHECKING:  # a module __getattr__ would hide misspelt names from mypy
    __getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals(), __all__)
