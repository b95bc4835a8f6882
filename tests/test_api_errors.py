"""The server's short error code in error messages (``answered 409 result_not_ready``), pure."""

from __future__ import annotations

import pytest

from workflows_async import errors
from workflows_async._api_errors import code_from_body, error_for_status


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"error": "result_not_ready", "message": "not yet"}', "result_not_ready"),
        (b'{"code": "not_found"}', "not_found"),
        (b'{"errorCode": "E.auth-1"}', "E.auth-1"),
        (b'{"error": {"code": "invalid_token", "message": "x"}}', "invalid_token"),
        (b'{"error": "Ada Lovelace was not found"}', None),  # free text: never
        (b'{"error": "ada@example.com"}', None),
        (b'{"error": "' + b"a" * 65 + b'"}', None),
        (b'{"error": "1abc"}', None),
        (b'{"error": 5}', None),
        (b'["not_found"]', None),
        (b"not_found", None),
        (b"", None),
        (b"\xff\xfe", None),
    ],
)
def test_code_from_body(body: bytes, code: str | None) -> None:
    assert code_from_body(body) == code


def test_the_message_carries_the_code_and_nothing_else_of_the_body() -> None:
    error = error_for_status(
        409,
        method="GET",
        path="/workflows/w1/result",
        headers={},
        body=b'{"error": "result_not_ready", "message": "Ada Lovelace: wait"}',
    )
    assert isinstance(error, errors.ConflictError)
    assert error.code == "result_not_ready"
    assert str(error) == "GET /workflows/w1/result answered 409 result_not_ready"
    assert "Ada" in error.body_excerpt and "Ada" not in str(error)


def test_403_keeps_the_permission_and_adds_the_code() -> None:
    error = error_for_status(
        403,
        method="POST",
        path="/workflows/run",
        headers={"X-Request-Id": "r1"},
        body=b'{"error": "forbidden", "permission": "can_run"}',
    )
    assert isinstance(error, errors.PermissionDeniedError)
    assert (error.code, error.permission) == ("forbidden", "can_run")
    assert str(error) == (
        "POST /workflows/run answered 403 forbidden (request id r1): missing permission can_run"
    )


def test_no_code_no_change() -> None:
    error = error_for_status(500, method="GET", path="/workflows/w1", headers={}, body=b"oops")
    assert error is not None and error.code is None
    assert str(error) == "GET /workflows/w1 answered 500"
