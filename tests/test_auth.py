"""KeySecretAuth: authorize, refresh before expiry, single flight, 401 -> one refresh, one retry."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_api import FakeAPI

import workflows_async as wa
from workflows_async import errors
from workflows_async.auth import jwt_expiry

WF = "wf-1"
FAST = wa.RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token_body(access: str, refresh: str = "r1", expiry: float = 300) -> dict[str, Any]:
    return {
        "accessToken": access,
        "refreshToken": refresh,
        "expiryDuration": expiry,
        "tokenType": "Bearer",
    }


def count(api: FakeAPI, method: str, path: str) -> int:
    return len(api.calls(method, path))


def bearer(api: FakeAPI, path: str, index: int) -> str:
    return api.calls("GET", path)[index].headers["Authorization"]


@pytest.fixture
async def mocked() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as api:
        yield api


def local(api: FakeAPI, auth: wa.Auth) -> wa.Session:
    """A Session on the fake API (plain http to 127.0.0.1)."""
    return wa.Session(api.base_url, auth, retry=FAST, allow_insecure_http=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def session(mocked: FakeAPI, clock: Clock) -> AsyncIterator[wa.Session]:
    auth = wa.KeySecretAuth("my-key", "my-secret", refresh_margin=30, clock=clock)
    async with local(mocked, auth) as s:
        yield s


def workflow_ok(m: FakeAPI, repeat: bool = True) -> None:
    m.get(f"/workflows/{WF}", payload={"id": WF, "status": "IN_PROGRESS"}, repeat=repeat)


async def test_authorize_on_first_use_then_reuse(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.post("/auth/authorize", payload=token_body("a1"))
    workflow_ok(mocked)
    await session.get_workflow(WF)
    await session.get_workflow(WF)
    assert count(mocked, "POST", "/auth/authorize") == 1
    call = mocked.calls("POST", "/auth/authorize")[0]
    assert call.json() == {"key": "my-key", "secret": "my-secret"}
    assert "Authorization" not in call.headers
    assert bearer(mocked, f"/workflows/{WF}", 1) == "Bearer a1"


async def test_refresh_shortly_before_expiry(
    session: wa.Session, mocked: FakeAPI, clock: Clock
) -> None:
    mocked.post("/auth/authorize", payload=token_body("a1", "r1", 300))
    mocked.post("/auth/refresh", payload=token_body("a2", "r2", 300))
    workflow_ok(mocked)
    await session.get_workflow(WF)
    clock.now += 269  # 31 s left: still fresh
    await session.get_workflow(WF)
    clock.now += 2  # 29 s left: inside the margin
    await session.get_workflow(WF)
    refresh = mocked.calls("POST", "/auth/refresh")
    assert len(refresh) == 1 and refresh[0].json() == {"refreshToken": "r1"}
    assert [bearer(mocked, f"/workflows/{WF}", i) for i in range(3)] == [
        "Bearer a1",
        "Bearer a1",
        "Bearer a2",
    ]


async def test_jwt_exp_claim_wins_over_expiry_duration(mocked: FakeAPI, clock: Clock) -> None:
    payload = (
        base64.urlsafe_b64encode(json.dumps({"exp": 10_000 + 120}).encode()).decode().rstrip("=")
    )
    jwt = f"eyJhbGciOiJIUzI1NiJ9.{payload}.sig"
    assert jwt_expiry(jwt) == 10_120
    auth = wa.KeySecretAuth("k", "s", refresh_margin=30, clock=clock, wall_clock=lambda: 10_000.0)
    mocked.post("/auth/authorize", payload=token_body(jwt, "r1", 999_999), repeat=True)
    mocked.post("/auth/refresh", payload=token_body(jwt, "r1", 999_999), repeat=True)
    workflow_ok(mocked)
    async with local(mocked, auth) as session:
        await session.get_workflow(WF)
        clock.now += 95  # 25 s before the JWT's exp, though expiryDuration says days
        await session.get_workflow(WF)
    assert count(mocked, "POST", "/auth/refresh") == 1


async def test_fifty_concurrent_calls_cause_one_refresh(
    session: wa.Session, mocked: FakeAPI, clock: Clock
) -> None:
    mocked.post("/auth/authorize", payload=token_body("a1", "r1", 300))
    mocked.post("/auth/refresh", payload=token_body("a2", "r2", 300), repeat=True)
    workflow_ok(mocked)
    await session.get_workflow(WF)
    clock.now += 1000  # expired
    await asyncio.gather(*(session.get_workflow(WF) for _ in range(50)))
    assert count(mocked, "POST", "/auth/refresh") == 1
    assert count(mocked, "POST", "/auth/authorize") == 1


async def test_401_refreshes_once_and_retries_once(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.post("/auth/authorize", payload=token_body("a1"))
    mocked.post("/auth/refresh", payload=token_body("a2"))
    mocked.get(f"/workflows/{WF}", status=401)
    workflow_ok(mocked)
    assert (await session.get_workflow(WF)).id == WF
    assert count(mocked, "POST", "/auth/refresh") == 1
    assert bearer(mocked, f"/workflows/{WF}", 1) == "Bearer a2"


async def test_persistent_401_is_not_a_loop(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.post("/auth/authorize", payload=token_body("a1"), repeat=True)
    mocked.post("/auth/refresh", payload=token_body("a2"), repeat=True)
    mocked.get(f"/workflows/{WF}", status=401, repeat=True)
    with pytest.raises(errors.AuthenticationError) as info:
        await session.get_workflow(WF)
    assert count(mocked, "GET", f"/workflows/{WF}") == 2
    assert count(mocked, "POST", "/auth/refresh") == 1
    assert "a1" not in str(info.value) and "a2" not in str(info.value)


async def test_failed_refresh_falls_back_to_authorize(
    session: wa.Session, mocked: FakeAPI, clock: Clock
) -> None:
    mocked.post("/auth/authorize", payload=token_body("a1", "r1", 300))
    mocked.post("/auth/refresh", status=401)
    mocked.post("/auth/authorize", payload=token_body("a3", "r3", 300))
    workflow_ok(mocked)
    await session.get_workflow(WF)
    clock.now += 1000
    await session.get_workflow(WF)
    assert count(mocked, "POST", "/auth/authorize") == 2
    assert bearer(mocked, f"/workflows/{WF}", 1) == "Bearer a3"


async def test_wrong_credentials_raise_authentication_error(
    session: wa.Session, mocked: FakeAPI
) -> None:
    mocked.post("/auth/authorize", status=401, body='{"message":"bad key"}')
    with pytest.raises(errors.AuthenticationError) as info:
        await session.get_workflow(WF)
    assert "my-secret" not in str(info.value) and "my-key" not in str(info.value)


async def test_token_auth_401_is_final(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF}", status=401, repeat=True)
    async with local(mocked, wa.TokenAuth("t")) as session:
        with pytest.raises(errors.AuthenticationError):
            await session.get_workflow(WF)
    assert count(mocked, "GET", f"/workflows/{WF}") == 1


def test_reprs_hide_credentials() -> None:
    assert "sekrit" not in repr(wa.KeySecretAuth("key-id", "sekrit"))
    assert "key-id" not in repr(wa.KeySecretAuth("key-id", "sekrit"))
    assert "s3cr3t-bearer" not in repr(wa.TokenAuth("s3cr3t-bearer"))
    assert "abc" not in repr(wa.Token(access_token="abc", refresh_token="def"))
    with pytest.raises(errors.ConfigurationError):
        wa.KeySecretAuth("", "x")
    with pytest.raises(errors.ConfigurationError):
        wa.TokenAuth("")


@pytest.mark.parametrize("expiry", [0, -5])
async def test_implausible_lifetimes_still_give_one_token_request(
    mocked: FakeAPI, clock: Clock, expiry: float
) -> None:
    auth = wa.KeySecretAuth("k", "s", clock=clock)
    mocked.post("/auth/authorize", payload=token_body("a1", "r1", expiry), repeat=True)
    workflow_ok(mocked)
    async with local(mocked, auth) as session:
        await asyncio.gather(*(session.get_workflow(WF) for _ in range(50)))
    assert count(mocked, "POST", "/auth/authorize") == 1


async def test_a_jwt_judged_expired_by_a_fast_local_clock_falls_back_to_expiry_duration(
    mocked: FakeAPI, clock: Clock
) -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": 10_000 + 300}).encode()).decode()
    jwt = f"eyJhbGciOiJIUzI1NiJ9.{payload.rstrip('=')}.sig"
    fast_wall_clock = lambda: 10_000.0 + 600  # noqa: E731 - ten minutes ahead of the server
    auth = wa.KeySecretAuth("k", "s", clock=clock, wall_clock=fast_wall_clock)
    mocked.post("/auth/authorize", payload=token_body(jwt, "r1", 300), repeat=True)
    workflow_ok(mocked)
    async with local(mocked, auth) as session:
        await asyncio.gather(*(session.get_workflow(WF) for _ in range(50)))
        await session.get_workflow(WF)
    assert count(mocked, "POST", "/auth/authorize") == 1


async def test_a_failed_renewal_is_shared_not_repeated_by_every_waiting_call(
    mocked: FakeAPI, clock: Clock
) -> None:
    auth = wa.KeySecretAuth("k", "s", clock=clock)
    mocked.post("/auth/authorize", status=400, body='{"message":"nope"}', repeat=True)
    async with local(mocked, auth) as session:
        results = await asyncio.gather(
            *(session.get_workflow(WF) for _ in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, errors.BadRequestError) for r in results)
        assert count(mocked, "POST", "/auth/authorize") == 1
        with pytest.raises(errors.BadRequestError):
            await session.get_workflow(WF)  # a later call tries again
    assert count(mocked, "POST", "/auth/authorize") == 2


class ExchangedTokenAuth:
    """A user's own auth, written with public names only: it trades a code for a token through
    the client's token request, and sends it raw."""

    def __init__(self) -> None:
        self.value: str | None = None

    async def authorization(self, send: wa.TokenRequest) -> str:
        if self.value is None:
            await self._exchange(send)
        assert self.value is not None
        return self.value

    async def renew(self, send: wa.TokenRequest, rejected: str) -> str | None:
        if self.value == rejected:
            await self._exchange(send)
        return self.value

    async def _exchange(self, send: wa.TokenRequest) -> None:
        body = await send("/auth/authorize", json.dumps({"key": "code"}).encode())
        self.value = json.loads(body)["accessToken"]


async def test_a_custom_auth_needs_only_public_names(mocked: FakeAPI) -> None:
    mocked.post("/auth/authorize", status=503)  # the token request is retried like a GET
    mocked.post("/auth/authorize", payload=token_body("c1"))
    mocked.post("/auth/authorize", payload=token_body("c2"))
    mocked.get(f"/workflows/{WF}", status=401)
    workflow_ok(mocked)
    auth: wa.Auth = ExchangedTokenAuth()
    async with local(mocked, auth) as session:
        await session.get_workflow(WF)
    assert [bearer(mocked, f"/workflows/{WF}", i) for i in range(2)] == ["c1", "c2"]
    assert "Authorization" not in mocked.calls("POST", "/auth/authorize")[0].headers
