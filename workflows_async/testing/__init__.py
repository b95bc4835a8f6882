"""Testing tools: `Simulator`, a stateful fake of the Workflows API that signs its webhooks.

Invariants: nothing here talks to anything but the addresses it is given (127.0.0.1 by default);
every name in ``__all__`` is public, stable and importable from ``workflows_async.testing``.

    async with Simulator(time_scale=0.01, webhook_urls=[receiver_url]) as sim:
        ...  # point a client at sim.base_url with key=sim.key, secret=sim.secret
"""

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
    "Simulator",
    "WebhookAttempt",
    "WorkflowDefinition",
    "WorkflowInfo",
    "generate_signing_key",
    "public_key_pem",
    "sign_webhook",
]
