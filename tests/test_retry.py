"""Pure tests of the retry decisions and status-to-exception mapping (no event loop)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from workflows_async import errors
from workflows_async._api_errors import error_for_status
from workflows_async._retry import RetryPolicy, parse_retry_after
from workflows_async.models import Workflow
from workflows_async.statuses import StatusSet


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_get_retries_every_transient_status(status: int) -> None:
    assert RetryPolicy().retry_status("GET", status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 415, 422])
def test_no_retry_on_client_errors(status: int) -> None:
    assert not RetryPolicy().retry_status("GET", status)
    assert not RetryPolicy().retry_status("POST", status)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, True), (503, False), (500, False), (502, False), (504, False), (408, False)],
)
def test_post_retried_only_when_surely_not_applied(status: int, expected: bool) -> None:
    assert RetryPolicy().retry_status("POST", status) is expected


def test_transport_retry_rules() -> None:
    policy = RetryPolicy()
    assert policy.retry_transport("GET", connected=True)
    assert policy.retry_transport("POST", connected=False)
    assert not policy.retry_transport("POST", connected=True)


def test_full_jitter_is_bounded_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert policy.backoff_delay(0, lambda: 1.0) == 0.5
    assert policy.backoff_delay(3, lambda: 1.0) == 4.0
    assert policy.backoff_delay(10, lambda: 1.0) == 4.0
    assert policy.backoff_delay(2, lambda: 0.0) == 0.0
    assert policy.delay(5, 7.0) == 7.0


def test_retry_after_cap() -> None:
    policy = RetryPolicy(max_retry_after=10)
    assert policy.retry_after_allowed(None)
    assert policy.retry_after_allowed(10)
    assert not policy.retry_after_allowed(11)


def test_policy_validation() -> None:
    with pytest.raises(errors.ConfigurationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(errors.ConfigurationError):
        RetryPolicy(base_delay=-1)
    assert RetryPolicy.none().max_attempts == 1


def test_parse_retry_after_both_forms() -> None:
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Sun, 29 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 29 Nov 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (415, errors.UnsupportedMediaTypeError),
        (429, errors.RateLimitError),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (503, errors.ServerError),
        (409, errors.ConflictError),
    ],
)
def test_every_error_status_maps_to_its_exception(status: int, cls: type[errors.APIError]) -> None:
    error = error_for_status(
        status,
        method="GET",
        path="/workflows/abc",
        headers={"X-Request-Id": "req-1", "Retry-After": "3"},
        body=b'{"message": "nope"}',
    )
    assert type(error) is cls
    assert error is not None
    assert error.status == status
    assert error.request_id == "req-1"
    assert error.retry_after == 3.0
    assert "GET /workflows/abc" in str(error)
    assert "nope" in error.body_excerpt
    assert "nope" not in str(error)  # the server may echo request data: not in messages


def test_success_is_no_error() -> None:
    assert error_for_status(200, method="GET", path="/", headers={}, body=b"") is None


def test_status_set_default_and_custom() -> None:
    default = StatusSet()
    assert default.is_terminal("COMPLETED") and default.is_success("completed")
    for status in ("FAILED", "ERROR", "CANCELLED", "CANCELED", "EXPIRED", "REJECTED"):
        assert default.is_terminal(status) and default.is_failure(status)
    for status in ("AWAITING", "IN_PROGRESS", "SOMETHING_NEW", ""):
        assert not default.is_terminal(status)
    custom = StatusSet(success={"DONE"}, failure={"BROKEN"})
    assert custom.is_terminal("DONE") and not custom.is_terminal("COMPLETED")
    with pytest.raises(errors.ConfigurationError):
        StatusSet(success={"X"}, failure={"x"})


def test_workflow_status_is_open() -> None:
    workflow = Workflow(id="w", status="BRAND_NEW_STATUS")
    assert workflow.status == "BRAND_NEW_STATUS"
    assert not StatusSet().is_terminal(workflow.status)
    assert StatusSet().is_failure(Workflow(id="w", status="FAILED").status)
