"""workflows_async: an asyncio client and webhook receiver for the Workflows (identity/KYC) API."""

from ._retry import RetryPolicy
from ._version import __version__
from .auth import Auth, KeySecretAuth, OrganizationTokenAuth, TokenAuth
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
)
from .events import WebhookEvent
from .executions import Execution, ExecutionOutcome
from .keys import KeyStore, WebhookVerifier
from .models import (
    Case,
    Channel,
    Parameters,
    StatusSet,
    Token,
    Workflow,
    WorkflowOutcome,
    WorkflowResult,
    WorkflowStatus,
)
from .polling import PollPolicy
from .records import Record
from .redis_bus import RedisBus
from .session import Session

__all__ = [
    "APIError",
    "Auth",
    "AuthenticationError",
    "BadRequestError",
    "Bus",
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
    "StatusSet",
    "Token",
    "TokenAuth",
    "TransportError",
    "UnsupportedMediaTypeError",
    "WaitError",
    "WebhookError",
    "WebhookEvent",
    "WebhookVerifier",
    "Workflow",
    "WorkflowFailed",
    "WorkflowOutcome",
    "WorkflowResult",
    "WorkflowStatus",
    "WorkflowTimeout",
    "WorkflowsError",
    "__version__",
]
