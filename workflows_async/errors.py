"""The exception tree of ``workflows_async``.

::

    WorkflowsError
    ├── ConfigurationError            (also ValueError) bad settings, refused http://, bad ids
    ├── SessionClosedError            (also RuntimeError) the Session was closed
    │   └── WrongEventLoopError       the Session is used from a loop it was not opened in
    ├── TransportError                network failure, connection reset, timeout
    │   └── RequestTimeout            (also TimeoutError)
    ├── APIError                      the API answered with an error status
    │   ├── BadRequestError           400
    │   ├── AuthenticationError       401 (after the renewal the client tries)
    │   │   └── CredentialsError      the credentials themselves are refused: renewing cannot help
    │   ├── PermissionDeniedError     403
    │   ├── NotFoundError             404
    │   ├── ConflictError             409 (e.g. result_not_ready)
    │   ├── UnsupportedMediaTypeError 415
    │   ├── RateLimitError            429 (and a Retry-After above the cap)
    │   └── ServerError               5xx
    ├── OutcomeUnknownError           a POST may or may not have taken effect: reconcile first
    ├── DecodeError                   a 2xx body that does not match the model
    │   └── ResponseTooLargeError     a body above ``max_response_body`` (not read, not retried)
    ├── WebhookError                  a webhook the receiver refuses
    │   ├── BadEventError             a verified body that is not a usable event (events.py)
    │   ├── SignatureError            missing, malformed, forged or unverifiable signature
    │   └── KeyUnavailableError       the signing key cannot be fetched right now
    └── WaitError                     waiting for a workflow did not give a result
        ├── WorkflowTimeout           (also TimeoutError) the deadline passed
        └── WorkflowFailed            a failure-like terminal status

Invariant: no message built here contains a token, a secret or personal data; messages name
the HTTP method and the path (ids only), never request bodies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Workflow

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "CredentialsError",
    "DecodeError",
    "KeyUnavailableError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeout",
    "ResponseTooLargeError",
    "ServerError",
    "SessionClosedError",
    "SignatureError",
    "TransportError",
    "UnsupportedMediaTypeError",
    "WaitError",
    "WebhookError",
    "WorkflowFailed",
    "WorkflowTimeout",
    "WorkflowsError",
    "WrongEventLoopError",
]

_EXCERPT_LIMIT = 200


class WorkflowsError(Exception):
    """Base class of every error this library raises.

    ``workflow_id`` names the workflow the error concerns when it is known: ``run_and_wait`` and
    ``wait`` set it on every error they raise once the workflow id is known, so a caller can
    always resume with ``await session.wait(error.workflow_id)``.
    """

    workflow_id: str | None = None


class ConfigurationError(WorkflowsError, ValueError):
    """A setting or an argument is not acceptable (raised before any request is made)."""


class SessionClosedError(WorkflowsError, RuntimeError):
    """The Session was closed; open a new one."""


class WrongEventLoopError(SessionClosedError):
    """The Session was first used in another event loop (its connections belong to that loop):
    e.g. a module-level Session reused across two ``asyncio.run`` calls. Open one Session per
    event loop: inside the coroutine ``asyncio.run`` runs, or in a worker's start-up hook."""


class TransportError(WorkflowsError):
    """The request did not get an HTTP answer: connection refused or reset, DNS, timeout."""

    def __init__(self, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.method = method
        self.path = path


class RequestTimeout(TransportError, TimeoutError):
    """One HTTP request took longer than the configured request timeout."""


class APIError(WorkflowsError):
    """The API answered with an error status.

    ``body_excerpt`` is the first characters of the response body (the server's own error
    text). It is kept as an attribute only, never put in the message: a server may echo request
    data, and messages end up in logs. ``code`` is the server's short error code (e.g.
    ``result_not_ready``) when its JSON body named one as a plain identifier; the message
    carries it after the status, and nothing else of the body.
    """

    def __init__(
        self,
        status: int,
        *,
        method: str,
        path: str,
        body_excerpt: str = "",
        request_id: str | None = None,
        retry_after: float | None = None,
        detail: str = "",
        code: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.method = method
        self.path = path
        self.body_excerpt = body_excerpt[:_EXCERPT_LIMIT]
        self.request_id = request_id
        self.retry_after = retry_after
        text = f"{method} {path} answered {status}"
        if code:
            text += f" {code}"
        if request_id:
            text += f" (request id {request_id})"
        if detail:
            text += f": {detail}"
        super().__init__(text)


class BadRequestError(APIError):
    """400: the API refused the request as malformed."""


class AuthenticationError(APIError):
    """401: bad or expired credentials (after the one refresh the client tries)."""


class CredentialsError(AuthenticationError):
    """The credentials themselves are refused, so renewing the token cannot help: the token
    request (``/auth/authorize`` or ``/auth/refresh``) answered 401/403, or the auth has no way
    to renew (a fixed or organization token). A wait fails on it; a plain
    :class:`AuthenticationError` on a poll is followed by a renewal and more polling."""


class PermissionDeniedError(APIError):
    """403: the credentials may not do this. ``permission`` is the permission the server named
    (e.g. ``can_run`` on a workflow definition), when it named one as a short identifier; the
    message names the call and that permission, nothing else of the server's body."""

    def __init__(self, status: int, *, permission: str | None = None, **fields: Any) -> None:
        if permission and "detail" not in fields:
            fields["detail"] = f"missing permission {permission}"
        super().__init__(status, **fields)
        self.permission = permission


class NotFoundError(APIError):
    """404: no such workflow, workflow definition or case."""


class ConflictError(APIError):
    """409: the request conflicts with the resource's state (e.g. ``result_not_ready``)."""


class UnsupportedMediaTypeError(APIError):
    """415: the API did not accept the request's content type."""


class RateLimitError(APIError):
    """429, or a Retry-After longer than the retry policy allows; see ``retry_after``."""


class ServerError(APIError):
    """5xx: the API failed."""


class OutcomeUnknownError(WorkflowsError):
    """A POST that creates something (a case, a parameter set, a workflow run) may or may not
    have taken effect: the server answered 5xx, the connection broke after the request was
    sent, or a 2xx body could not be read. The API has no idempotency key, so the library never
    resends such a POST: sending it again could start a second paid check. Reconcile first (see
    the README's "Failure semantics"). ``status`` is the HTTP status when there was one; the
    ids are what is known of the request (and ``workflow_id`` when the answer carried one).
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        status: int | None = None,
        workflow_id: str | None = None,
        case_id: str | None = None,
        record_id: str | None = None,
        workflow_definition_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.status = status
        self.workflow_id = workflow_id
        self.case_id = case_id
        self.record_id = record_id
        self.workflow_definition_id = workflow_definition_id


class DecodeError(WorkflowsError):
    """A successful answer whose body does not have the documented shape."""


class ResponseTooLargeError(DecodeError):
    """An answer's body is larger than the Session's ``max_response_body``: it was not read.

    A subclass of :class:`DecodeError` because the server did answer; its body is unusable, and
    asking again would bring the same body, so it is not retried. (For a POST that creates
    something the caller gets :class:`OutcomeUnknownError` instead, caused by this error.)
    """

    def __init__(self, *, method: str, path: str, limit: int, status: int) -> None:
        super().__init__(f"{method} {path}: the answer ({status}) is larger than {limit} bytes")
        self.method = method
        self.path = path
        self.limit = limit
        self.status = status


class WebhookError(WorkflowsError):
    """A webhook request the receiver refuses."""


class SignatureError(WebhookError):
    """The webhook's JWS-SIGNATURE is missing, malformed, forged or made with an unknown key."""


class KeyUnavailableError(WebhookError):
    """The signing key could not be fetched now; the platform should retry the delivery."""


class WaitError(WorkflowsError):
    """Waiting for a workflow ended without a result."""

    def __init__(self, message: str, *, workflow_id: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class WorkflowTimeout(WaitError, TimeoutError):
    """The wait's deadline passed; ``await session.wait(workflow_id)`` picks it up again."""


class WorkflowFailed(WaitError):
    """The workflow ended with a failure-like status; ``workflow`` holds its final state."""

    def __init__(self, workflow: Workflow) -> None:
        super().__init__(
            f"workflow {workflow.id} ended with status {workflow.status}", workflow_id=workflow.id
        )
        self.workflow = workflow
