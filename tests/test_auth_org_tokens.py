"""Organization tokens (sent as they are), legacy JWT bearer tokens, 401/403 at the HTTP seam
(a scripted localhost API, tests/fake_api.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_api import FakeAPI

import workflows_async as wa
from workflows_async import errors
from workflows_async._api_errors import permission_from_body
from workflows_async.auth import auth_from_env

WF_ID = "9b2f7d4e-1c3a-4b5d-8e6f-7a8b9c0d1e2f"
ORG = "tot_0123456789abcdefSECRET"
NO_RETRY = wa.RetryPolicy(max_attempts=1)


@pytest.fixture
async def mocked() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as api:
        yield api


def local(api: FakeAPI, auth: wa.Auth | None, **kwargs: Any) -> wa.Session:
    return wa.Session(api.base_url, auth, allow_insecure_http=True, **kwargs)


def sent_headers(mocked: FakeAPI, method: str, path: str) -> list[Any]:
    return [call.headers for call in mocked.calls(method, path)]


def answer(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", payload={"id": WF_ID, "status": "RUNNING"})


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (wa.OrganizationTokenAuth(ORG), ORG),
        (wa.TokenAuth("eyJhbGciOi.jwt.sig"), "Bearer eyJhbGciOi.jwt.sig"),
    ],
)
async def test_exact_authorization_header_per_auth_kind(
    mocked: FakeAPI, auth: wa.Auth, expected: str
) -> None:
    answer(mocked)
    async with local(mocked, auth) as session:
        await session.get_workflow(WF_ID)
    (headers,) = sent_headers(mocked, "GET", f"/workflows/{WF_ID}")
    assert headers["Authorization"] == expected


async def test_key_secret_sends_bearer_of_the_authorized_jwt(mocked: FakeAPI) -> None:
    mocked.post("/auth/authorize", payload={"accessToken": "acc-1", "expiryDuration": 60})
    answer(mocked)
    async with local(mocked, wa.KeySecretAuth("k", "s")) as session:
        await session.get_workflow(WF_ID)
    (headers,) = sent_headers(mocked, "GET", f"/workflows/{WF_ID}")
    assert headers["Authorization"] == "Bearer acc-1"


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({"WORKFLOWS_TOKEN": ORG}, wa.OrganizationTokenAuth),
        ({"WORKFLOWS_ORG_TOKEN": ORG}, wa.OrganizationTokenAuth),
        ({"WORKFLOWS_ORG_TOKEN": ORG, "WORKFLOWS_API_KEY": "k", "WORKFLOWS_API_SECRET": "s"},
         wa.OrganizationTokenAuth),
        ({"WORKFLOWS_API_KEY": "k", "WORKFLOWS_API_SECRET": "s"}, wa.KeySecretAuth),
        ({"WORKFLOWS_TOKEN": "a.jwt.token"}, wa.TokenAuth),
    ],
)  # fmt: skip
def test_from_env_picks_the_organization_token_first(env: dict[str, str], kind: type) -> None:
    assert isinstance(auth_from_env(env), kind)


async def test_from_env_sends_a_tot_token_without_bearer(mocked: FakeAPI) -> None:
    """Failed before organization tokens were known: WORKFLOWS_TOKEN=tot_... went as Bearer."""
    answer(mocked)
    env = {"WORKFLOWS_BASE_URL": mocked.base_url, "WORKFLOWS_TOKEN": ORG}
    async with wa.Session.from_env(env, allow_insecure_http=True) as session:
        await session.get_workflow(WF_ID)
    (headers,) = sent_headers(mocked, "GET", f"/workflows/{WF_ID}")
    assert headers["Authorization"] == ORG


def test_from_env_refuses_two_different_organization_tokens() -> None:
    with pytest.raises(wa.ConfigurationError, match="different tokens"):
        auth_from_env({"WORKFLOWS_ORG_TOKEN": ORG, "WORKFLOWS_TOKEN": "tot_other"})


@pytest.mark.parametrize(
    "token", ["", "abc", "Bearer tot_abc", "tot_", "tot_a b", "tot_\r\nX-Evil: 1", "tot_é"]
)
def test_organization_token_is_checked(token: str) -> None:
    with pytest.raises(wa.ConfigurationError):
        wa.OrganizationTokenAuth(token)


def test_token_auth_refuses_an_organization_token_and_says_what_to_use() -> None:
    with pytest.raises(wa.ConfigurationError, match="OrganizationTokenAuth"):
        wa.TokenAuth(ORG)


def test_reprs_never_show_the_token() -> None:
    auth = wa.OrganizationTokenAuth(ORG)
    assert ORG not in repr(auth) and "SECRET" not in str(auth)
    session = wa.Session("https://api.example.test", auth)
    assert "SECRET" not in repr(session)


async def test_401_with_an_organization_token_is_final(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", status=401, payload={"error": "invalid_token"})
    async with local(mocked, wa.OrganizationTokenAuth(ORG), retry=NO_RETRY) as session:
        with pytest.raises(errors.CredentialsError) as caught:
            await session.get_workflow(WF_ID)
    assert len(sent_headers(mocked, "GET", f"/workflows/{WF_ID}")) == 1
    message = str(caught.value)
    assert "organization token" in message and "cannot be renewed" in message
    assert "SECRET" not in message and caught.value.status == 401


@pytest.mark.parametrize(
    ("body", "permission"),
    [
        (b'{"error":"forbidden","message":"no","permission":"can_run"}', "can_run"),
        (b'{"error":{"code":"forbidden","requiredPermission":"can_view_workspace"}}',
         "can_view_workspace"),
        (b'{"missingPermissions":["can_run"]}', "can_run"),
        (b'{"missingPermissions":["can_run","can_view_workspace"]}', None),
        (b"Forbidden: token lacks can_run on definition kyc", "can_run"),
        (b"can_run or can_view_workspace", None),
        (b'{"permission":"<script>alert(1)</script>"}', None),
        (b'{"permission":"Alice Smith 19900101"}', None),
        (b'{"permission":"x' + b"a" * 100 + b'"}', None),
        (b"", None),
        (b"\xff\xfe", None),
    ],
)  # fmt: skip
def test_permission_from_body_is_tolerant_and_short(body: bytes, permission: str | None) -> None:
    assert permission_from_body(body) == permission


async def test_403_names_the_call_and_the_permission_only(mocked: FakeAPI) -> None:
    body = {"error": "forbidden", "message": "Alice 19900101 may not", "permission": "can_run"}
    mocked.post("/workflows/run", status=403, body=json.dumps(body))
    async with local(mocked, wa.OrganizationTokenAuth(ORG), retry=NO_RETRY) as session:
        with pytest.raises(errors.PermissionDeniedError) as caught:
            await session.run_workflow("c1", "kyc")
    error = caught.value
    assert error.permission == "can_run" and error.status == 403
    assert str(error) == "POST /workflows/run answered 403 forbidden: missing permission can_run"
    assert "Alice" not in str(error)


async def test_403_without_a_named_permission(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", status=403, body="nope")
    async with local(mocked, wa.OrganizationTokenAuth(ORG), retry=NO_RETRY) as session:
        with pytest.raises(errors.PermissionDeniedError) as caught:
            await session.get_workflow(WF_ID)
    assert caught.value.permission is None
    assert str(caught.value) == f"GET /workflows/{WF_ID} answered 403"
