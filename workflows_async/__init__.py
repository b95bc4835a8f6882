"""workflows_async: an asyncio client and webhook receiver for the Workflows (identity/KYC) API.

Invariant: importing the package is cheap (no aiohttp, cryptography or msgspec): each public name
loads its module on first use (PEP 562), so the pytest plugin and ``workflows-async --version``
pay only for what they use. Type checkers see the plain imports below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

if TYPE_CHECKING:
    from ._options import WebhookSettings
    from ._retry import RetryPolicy
    from .asgi import WebhookASGIApp
    from .auth import Auth, KeySecretAuth, OrganizationTokenAuth, TokenAuth, TokenRequest
    from .blocking import BlockingWebhookReceiver
    from .bus import Bus, InMemoryBus
    from .errors import (
        APIError,
        AuthenticationError,
        BadRequestError,
        ConfigurationError,
        ConflictError,
        CredentialsError,
        DecodeError,
        KeyUnavailableError,
        NotFoundError,
        OutcomeUnknownError,
        PermissionDeniedError,
        RateLimitError,
        RequestTimeout,
        ResponseTooLargeError,
        ServerError,
        SessionClosedError,
        SignatureError,
        TransportError,
        UnsupportedMediaTypeError,
        WaitError,
        WebhookError,
        WorkflowFailed,
        WorkflowsError,
        WorkflowTimeout,
        WrongEventLoopError,
    )
    from .events import WebhookEvent
    from .executions import Execution, ExecutionOutcome
    from .keys import KeyStore, WebhookVerifier
    from .models import Case, Channel, Parameters, Token, Workflow, WorkflowOutcome, WorkflowResult
    from .polling import PollPolicy
    from .records import Record
    from .redis_bus import RedisBus
    from .session import Session
    from .stats import CallStats, PollStats, Stats, WaitStats, WebhookStats
    from .statuses import StatusSet, WorkflowStatus
    from .webhooks import WebhookAnswer, WebhookCore

__all__ = [
    "APIError",
    "Auth",
    "AuthenticationError",
    "BadRequestError",
    "BlockingWebhookReceiver",
    "Bus",
    "CallStats",
    "Case",
    "Channel",
    "ConfigurationError",
    "ConflictError",
    "CredentialsError",
    "DecodeError",
    "Execution",
    "ExecutionOutcome",
    "InMemoryBus",
    "KeySecretAuth",
    "KeyStore",
    "KeyUnavailableError",
    "NotFoundError",
    "OrganizationTokenAuth",
    "OutcomeUnknownError",
    "Parameters",
    "PermissionDeniedError",
    "PollPolicy",
    "PollStats",
    "RateLimitError",
    "Record",
    "RedisBus",
    "RequestTimeout",
    "ResponseTooLargeError",
    "RetryPolicy",
    "ServerError",
    "Session",
    "SessionClosedError",
    "SignatureError",
    "Stats",
    "StatusSet",
    "Token",
    "TokenAuth",
    "TokenRequest",
    "TransportError",
    "UnsupportedMediaTypeError",
    "WaitError",
    "WaitStats",
    "WebhookASGIApp",
    "WebhookAnswer",
    "WebhookCore",
    "WebhookError",
    "WebhookEvent",
    "WebhookSettings",
    "WebhookStats",
    "WebhookVerifier",
    "Workflow",
    "WorkflowFailed",
    "WorkflowOutcome",
    "WorkflowResult",
    "WorkflowStatus",
    "WorkflowTimeout",
    "WorkflowsError",
    "WrongEventLoopError",
    "__version__",
]

_SOURCES: dict[str, str] = {
    "APIError": ".errors",
    "Auth": ".auth",
    "AuthenticationError": ".errors",
    "BadRequestError": ".errors",
    "BlockingWebhookReceiver": ".blocking",
    "Bus": ".bus",
    "CallStats": ".stats",
    "Case": ".models",
    "Channel": ".models",
    "ConfigurationError": ".errors",
    "ConflictError": ".errors",
    "CredentialsError": ".errors",
    "DecodeError": ".errors",
    "Execution": ".executions",
    "ExecutionOutcome": ".executions",
    "InMemoryBus": ".bus",
    "KeySecretAuth": ".auth",
    "KeyStore": ".keys",
    "KeyUnavailableError": ".errors",
    "NotFoundError": ".errors",
    "OrganizationTokenAuth": ".auth",
    "OutcomeUnknownError": ".errors",
    "Parameters": ".models",
    "PermissionDeniedError": ".errors",
    "PollPolicy": ".polling",
    "PollStats": ".stats",
    "RateLimitError": ".errors",
    "Record": ".records",
    "RedisBus": ".redis_bus",
    "RequestTimeout": ".errors",
    "ResponseTooLargeError": ".errors",
    "RetryPolicy": "._retry",
    "ServerError": ".errors",
    "Session": ".session",
    "SessionClosedError": ".errors",
    "SignatureError": ".errors",
    "Stats": ".stats",
    "StatusSet": ".statuses",
    "Token": ".models",
    "TokenAuth": ".auth",
    "TokenRequest": ".auth",
    "TransportError": ".errors",
    "UnsupportedMediaTypeError": ".errors",
    "WaitError": ".errors",
    "WaitStats": ".stats",
    "WebhookASGIApp": ".asgi",
    "WebhookAnswer": ".webhooks",
    "WebhookCore": ".webhooks",
    "WebhookError": ".errors",
    "WebhookEvent": ".events",
    "WebhookSettings": "._options",
    "WebhookStats": ".stats",
    "WebhookVerifier": ".keys",
    "Workflow": ".models",
    "WorkflowFailed": ".errors",
    "WorkflowOutcome": ".models",
    "WorkflowResult": ".models",
    "WorkflowStatus": ".statuses",
    "WorkflowTimeout": ".errors",
    "WorkflowsError": ".errors",
    "WrongEventLoopError": ".errors",
}
"""Where each public name lives (besides ``__version__``)."""

if not TYPE_CHECKING:  # a module __getattr__ would hide misspelt names from mypy
    __getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals(), __all__)
