"""Session request/response details, checked at the HTTP seam against a scripted localhost API
(tests/fake_api.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fake_api import Call, FakeAPI, first_connect_refused_session
from fake_time import FakeTime

import workflows_async as wa
from workflows_async import errors

BASE = "https://api.example.test"
FAST = wa.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002, max_time=5)
CASE_ID = "6f1c9a52-0b7e-4c8e-9a51-3f2d6f0e8a11"
WF_ID = "9b2f7d4e-1c3a-4b5d-8e6f-7a8b9c0d1e2f"


@pytest.fixture
async def mocked() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as api:
        yield api


def local(api: FakeAPI, auth: wa.Auth | None = None, **kwargs: Any) -> wa.Session:
    """A Session on the fake API (plain http to 127.0.0.1)."""
    return wa.Session(api.base_url, auth, allow_insecure_http=True, **kwargs)


@pytest.fixture
def fake_time() -> FakeTime:
    """The retry waits of the ``session`` fixture, recorded instead of slept."""
    return FakeTime()


@pytest.fixture
async def session(mocked: FakeAPI, fake_time: FakeTime) -> AsyncIterator[wa.Session]:
    s = fake_time.install(local(mocked, wa.TokenAuth("tok-123"), api_version=1, retry=FAST))
    async with s:
        yield s


def calls(mocked: FakeAPI, method: str, path: str) -> list[Call]:
    return mocked.calls(method, path)


async def test_create_case_sends_camel_case_and_headers(
    session: wa.Session, mocked: FakeAPI
) -> None:
    mocked.post("/cases", payload={"id": CASE_ID, "firstName": "Ann", "newField": 1})
    case = await session.create_case(first_name="Ann", personal_number="19900101-1234")
    assert case.id == CASE_ID and case.first_name == "Ann"
    (call,) = calls(mocked, "POST", "/cases")
    assert call.json() == {
        "firstName": "Ann",
        "personalNumber": "19900101-1234",
    }
    headers = call.headers
    assert headers["Authorization"] == "Bearer tok-123"
    assert headers["Accept"] == "application/json;version=1"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"workflows-async/{wa.__version__}"
    assert "1990" not in repr(case) and "Ann" not in repr(case)


async def test_parameters_run_status_result(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.post("/parameters", payload={"id": "p1", "workflowDefinitionId": "kyc"})
    mocked.post("/workflows/run", payload={"id": WF_ID, "caseId": CASE_ID, "status": "IN_PROGRESS"})
    mocked.get(
        f"/workflows/{WF_ID}",
        payload={"id": WF_ID, "caseId": CASE_ID, "status": "COMPLETED"},
    )
    result_body = {
        "createdDate": "2026-11-29T10:00:00Z",
        "caseId": CASE_ID,
        "partyId": "p-9",
        "score": {"risk": 3},
    }
    mocked.get(f"/workflows/{WF_ID}/result", payload=result_body)

    params = await session.create_parameters("kyc", {"country": "SE", "nested": {"a": [1, 2]}})
    (call,) = calls(mocked, "POST", "/parameters")
    assert call.json() == {
        "workflowDefinitionId": "kyc",
        "parameters": {"country": "SE", "nested": {"a": [1, 2]}},
    }
    workflow = await session.run_workflow(CASE_ID, "kyc", parameters_id=params.id)
    (call,) = calls(mocked, "POST", "/workflows/run")
    assert call.json() == {
        "caseId": CASE_ID,
        "workflowDefinitionId": "kyc",
        "parametersId": "p1",
    }
    assert workflow.status == "IN_PROGRESS" and not session.statuses.is_terminal(workflow.status)
    assert session.statuses.is_terminal((await session.get_workflow(WF_ID)).status)
    result = await session.get_result(WF_ID)
    assert result.created_date == "2026-11-29T10:00:00Z"
    assert result.case_id == CASE_ID and result.party_id == "p-9"
    assert result["score"] == {"risk": 3} and result.data == result_body
    assert "risk" not in repr(result)


async def test_default_accept_is_plain_json(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", payload={"id": WF_ID, "status": "X"})
    async with local(mocked, wa.TokenAuth("t")) as session:
        workflow = await session.get_workflow(WF_ID)
    assert workflow.status == "X"
    (call,) = calls(mocked, "GET", f"/workflows/{WF_ID}")
    assert call.headers["Accept"] == "application/json"


@pytest.mark.parametrize("bad", ["../auth", "a/b", "", "x" * 129, "id?x=1", "%2e%2e"])
async def test_ids_are_checked_before_any_request(
    session: wa.Session, mocked: FakeAPI, bad: str
) -> None:
    with pytest.raises(errors.ConfigurationError):
        await session.get_workflow(bad)
    with pytest.raises(errors.ConfigurationError):
        await session.get_result(bad)
    with pytest.raises(errors.ConfigurationError):
        await session.run_workflow(bad, "kyc")
    assert not mocked.requests


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (415, errors.UnsupportedMediaTypeError),
        (409, errors.APIError),
    ],
)
async def test_error_statuses_raise_typed_errors_without_retry(
    session: wa.Session, mocked: FakeAPI, status: int, cls: type[errors.APIError]
) -> None:
    mocked.get(f"/workflows/{WF_ID}", status=status, body='{"message":"m"}', repeat=True)
    with pytest.raises(cls) as info:
        await session.get_workflow(WF_ID)
    assert info.value.status == status
    assert "tok-123" not in str(info.value)
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}")) == 1


async def test_get_retried_on_500_then_succeeds(
    session: wa.Session, mocked: FakeAPI, fake_time: FakeTime
) -> None:
    url = f"/workflows/{WF_ID}"
    mocked.get(url, status=500)
    mocked.get(url, status=502)
    mocked.get(url, payload={"id": WF_ID, "status": "COMPLETED"})
    assert (await session.get_workflow(WF_ID)).status == "COMPLETED"
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}")) == 3
    # Full jitter: the n-th wait is at most base_delay * 2**n.
    first, second = fake_time.sleeps
    assert 0 <= first <= FAST.base_delay and 0 <= second <= 2 * FAST.base_delay


async def test_get_gives_up_after_max_attempts(
    session: wa.Session, mocked: FakeAPI, fake_time: FakeTime
) -> None:
    mocked.get(f"/workflows/{WF_ID}", status=503, repeat=True)
    with pytest.raises(errors.ServerError):
        await session.get_workflow(WF_ID)
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}")) == 3
    assert len(fake_time.sleeps) == 2  # no wait after the last try


async def test_post_not_retried_on_500(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.post("/workflows/run", status=500, repeat=True)
    with pytest.raises(errors.OutcomeUnknownError) as info:
        await session.run_workflow(CASE_ID, "kyc")
    assert info.value.status == 500 and isinstance(info.value.__cause__, errors.ServerError)
    assert len(calls(mocked, "POST", "/workflows/run")) == 1


async def test_post_not_retried_on_read_timeout(mocked: FakeAPI) -> None:
    mocked.post("/cases", action="hang", repeat=True)  # the request arrived; no answer comes
    async with local(mocked, wa.TokenAuth("t"), retry=FAST, timeout=0.2) as session:
        with pytest.raises(errors.OutcomeUnknownError) as info:
            await session.create_case(first_name="Ann")
    assert info.value.status is None and "timed out" in str(info.value)
    assert len(calls(mocked, "POST", "/cases")) == 1


async def test_post_not_retried_on_disconnect(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.post("/cases", action="disconnect", repeat=True)  # received, then the line drops
    with pytest.raises(errors.OutcomeUnknownError):
        await session.create_case()
    assert len(calls(mocked, "POST", "/cases")) == 1


async def test_post_retried_when_never_connected(mocked: FakeAPI) -> None:
    mocked.post("/cases", payload={"id": CASE_ID})
    # The first connection is refused (nothing sent); the retry reaches the API.
    async with (
        first_connect_refused_session(mocked.port) as http,
        wa.Session(
            "http://api.test",
            wa.TokenAuth("t"),
            retry=FAST,
            http_session=http,
            allow_insecure_http=True,
        ) as session,
    ):
        assert (await session.create_case()).id == CASE_ID
    assert len(calls(mocked, "POST", "/cases")) == 1  # the refused try never reached it


async def test_post_retried_on_429_honouring_retry_after(
    session: wa.Session, mocked: FakeAPI, fake_time: FakeTime
) -> None:
    mocked.post("/workflows/run", status=429, headers={"Retry-After": "3"})
    mocked.post("/workflows/run", payload={"id": WF_ID, "status": "IN_PROGRESS"})
    assert (await session.run_workflow(CASE_ID, "kyc")).id == WF_ID
    assert len(calls(mocked, "POST", "/workflows/run")) == 2
    assert fake_time.sleeps == [3.0]  # the server's wait, in full


async def test_retry_after_http_date_in_the_past_retries_at_once(
    session: wa.Session, mocked: FakeAPI, fake_time: FakeTime
) -> None:
    url = f"/workflows/{WF_ID}"
    mocked.get(url, status=429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    mocked.get(url, payload={"id": WF_ID, "status": "IN_PROGRESS"})
    assert (await session.get_workflow(WF_ID)).id == WF_ID
    assert fake_time.sleeps == [0.0]


@pytest.mark.parametrize("retry_after", ["120", "Fri, 01 Jan 2100 00:00:00 GMT"])
async def test_retry_after_above_cap_raises_rate_limit(
    session: wa.Session, mocked: FakeAPI, fake_time: FakeTime, retry_after: str
) -> None:
    mocked.get(f"/workflows/{WF_ID}", status=429, headers={"Retry-After": retry_after}, repeat=True)
    with pytest.raises(errors.RateLimitError) as info:
        await session.get_workflow(WF_ID)
    assert info.value.retry_after is not None and info.value.retry_after > 30
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}")) == 1
    assert fake_time.sleeps == []


async def test_undecodable_answer_is_decode_error(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", body="<html>oops</html>")
    with pytest.raises(errors.DecodeError):
        await session.get_workflow(WF_ID)


async def test_closed_session_refuses_use(mocked: FakeAPI) -> None:
    session = local(mocked, wa.TokenAuth("t"))
    await session.close()
    await session.close()
    with pytest.raises(errors.SessionClosedError):
        await session.get_workflow(WF_ID)
    with pytest.raises(errors.SessionClosedError):
        async with session:
            pass


async def test_caller_supplied_http_session_is_not_closed(mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", payload={"id": WF_ID, "status": "X"})
    async with aiohttp.ClientSession() as http:
        async with local(mocked, wa.TokenAuth("t"), http_session=http) as session:
            await session.get_workflow(WF_ID)
        assert not http.closed


@pytest.mark.parametrize(
    "url", ["http://api.example.test", "ftp://x", "api.example.test", "https://u:p@h", ""]
)
def test_base_url_checks(url: str) -> None:
    with pytest.raises(errors.ConfigurationError):
        wa.Session(url)


def test_http_allowed_only_on_request() -> None:
    session = wa.Session("http://127.0.0.1:1234/", allow_insecure_http=True)
    assert session.base_url == "http://127.0.0.1:1234"


def test_from_env() -> None:
    env = {
        "WORKFLOWS_BASE_URL": BASE,
        "WORKFLOWS_API_KEY": "k",
        "WORKFLOWS_API_SECRET": "s",
        "WORKFLOWS_API_VERSION": "3",
    }
    session = wa.Session.from_env(env)
    assert isinstance(session.auth, wa.KeySecretAuth) and session.api_version == 3
    assert "secret-value-2" not in repr(session) and "key-value-1" not in repr(session)
    token = wa.Session.from_env({"WORKFLOWS_BASE_URL": BASE, "WORKFLOWS_TOKEN": "t"})
    assert isinstance(token.auth, wa.TokenAuth)
    with pytest.raises(errors.ConfigurationError, match="credentials"):
        wa.Session.from_env({"WORKFLOWS_BASE_URL": BASE})
    with pytest.raises(errors.ConfigurationError, match="WORKFLOWS_BASE_URL"):
        wa.Session.from_env({"WORKFLOWS_TOKEN": "t"})
    with pytest.raises(errors.ConfigurationError):
        wa.Session.from_env({**env, "WORKFLOWS_API_VERSION": "two"})


def test_request_id_surfaces_in_errors() -> None:
    assert re.search(
        "request id r-1", str(errors.NotFoundError(404, method="GET", path="/x", request_id="r-1"))
    )


async def test_retries_stop_at_max_time_even_with_attempts_left(mocked: FakeAPI) -> None:
    policy = wa.RetryPolicy(max_attempts=50, base_delay=2.0, max_delay=2.0, max_time=5.0)
    mocked.get(f"/workflows/{WF_ID}", status=503, repeat=True)
    fake_time = FakeTime()
    async with fake_time.install(local(mocked, wa.TokenAuth("t"), retry=policy)) as session:
        with pytest.raises(errors.ServerError):
            await session.get_workflow(WF_ID)
    tries = len(calls(mocked, "GET", f"/workflows/{WF_ID}"))
    assert 2 <= tries < 50 and len(fake_time.sleeps) == tries - 1
    assert sum(fake_time.sleeps) <= policy.max_time  # the last wait is cut to the deadline


async def test_no_retry_when_asked(session: wa.Session, mocked: FakeAPI) -> None:
    mocked.get(f"/workflows/{WF_ID}", status=503, repeat=True)
    with pytest.raises(errors.ServerError):
        await session._poll_workflow(WF_ID)
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}")) == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_never_followed(
    session: wa.Session, mocked: FakeAPI, status: int
) -> None:
    # The target is on the same fake API, so that a followed redirect would stay local.
    elsewhere = mocked.base_url + "/elsewhere/x"
    mocked.post("/cases", status=status, headers={"Location": elsewhere})
    mocked.post("/elsewhere/x", payload={"id": CASE_ID})
    with pytest.raises(errors.APIError) as info:
        await session.create_case(first_name="Ann")
    assert info.value.status == status
    assert not calls(mocked, "POST", "/elsewhere/x") and not calls(mocked, "GET", "/elsewhere/x")


async def test_retry_after_longer_than_the_time_left_is_not_cut_short(mocked: FakeAPI) -> None:
    policy = wa.RetryPolicy(max_attempts=5, max_time=0.5, max_retry_after=30)
    mocked.get(f"/workflows/{WF_ID}", status=429, headers={"Retry-After": "1"}, repeat=True)
    fake_time = FakeTime()
    async with fake_time.install(local(mocked, wa.TokenAuth("t"), retry=policy)) as session:
        with pytest.raises(errors.RateLimitError) as info:
            await session.get_workflow(WF_ID)
    assert info.value.retry_after == 1
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}")) == 1  # no early try a second later
    assert fake_time.sleeps == []


async def test_a_retry_after_that_fits_the_time_left_is_waited_in_full(mocked: FakeAPI) -> None:
    policy = wa.RetryPolicy(max_attempts=5, max_time=10, max_retry_after=30)
    mocked.get(f"/workflows/{WF_ID}", status=429, headers={"Retry-After": "4"}, repeat=True)
    fake_time = FakeTime()
    async with fake_time.install(local(mocked, wa.TokenAuth("t"), retry=policy)) as session:
        with pytest.raises(errors.RateLimitError):
            await session.get_workflow(WF_ID)
    # 4 s, 4 s, then 2 s left: a third wait of 4 s does not fit, and none is cut short.
    assert fake_time.sleeps == [4.0, 4.0]
    assert len(calls(mocked, "GET", f"/workflows/{WF_ID}")) == 3
