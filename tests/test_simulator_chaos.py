"""The Simulator's production faults: token revocation, a key that signs before it is served,
POST errors before and after effect (random or scheduled), and a result that lags completion.

Driven with the bare client of ``test_simulator`` over real localhost sockets; nothing here
asserts on timing (delays under test are either 0 or an hour, and ended on purpose).
"""

from __future__ import annotations

import json
import uuid
import warnings

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from test_simulator import Receiver, b64url_decode, receiver, serve, verify

from workflows_async.testing import Faults, Simulator
from workflows_async.testing._signing import KeyRing

__all__ = ["receiver"]  # the fixture, imported so pytest finds it here

HOUR = 3600.0


# -- tokens -------------------------------------------------------------------------------------
async def test_revoke_tokens_refuses_old_tokens_but_authorize_still_works() -> None:
    async with serve() as (sim, api):
        login = await api.call("POST", "/auth/authorize", {"key": sim.key, "secret": sim.secret})
        refresh_token = login.body["refreshToken"]
        assert (await api.call("POST", "/cases", {})).status == 201
        sim.revoke_tokens()
        assert sim.token_revocations == 1
        refused = await api.call("POST", "/cases", {})
        assert refused.status == 401 and refused.body["error"] == "invalid_token"
        assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        old = await api.call("POST", "/auth/refresh", {"refreshToken": refresh_token})
        assert old.status == 401 and old.body["error"] == "invalid_refresh_token"
        await api.login()  # key and secret always work
        assert (await api.call("POST", "/cases", {})).status == 201


async def test_revoke_tokens_can_spare_refresh_tokens() -> None:
    async with serve() as (sim, api):
        login = await api.call("POST", "/auth/authorize", {"key": sim.key, "secret": sim.secret})
        sim.revoke_tokens(refresh_tokens=False)
        assert (await api.call("POST", "/cases", {})).status == 401
        renewed = await api.call(
            "POST", "/auth/refresh", {"refreshToken": login.body["refreshToken"]}
        )
        assert renewed.status == 200
        api.token = renewed.body["accessToken"]
        assert (await api.call("POST", "/cases", {})).status == 201


async def test_revoke_tokens_rate_revokes_before_the_call_it_picks() -> None:
    async with serve(faults=Faults(revoke_tokens_rate=1.0)) as (sim, api):
        refused = await api.call("POST", "/cases", {})
        assert refused.status == 401 and sim.requests[-1].fault == "tokens_revoked"
        await api.login()  # /auth/* calls never revoke
        assert (await api.call("GET", f"/workflows/{uuid.uuid4()}")).status == 401
        assert sim.token_revocations == 2
        sim.faults.revoke_tokens_rate = 0.0
        await api.login()
        assert (await api.call("POST", "/cases", {})).status == 201


async def test_revoke_tokens_rate_is_seeded() -> None:
    async def statuses(seed: int) -> list[int]:
        async with serve(seed=seed, faults=Faults(revoke_tokens_rate=0.3)) as (_, api):
            seen = []
            for _ in range(12):
                reply = await api.call("POST", "/cases", {})
                seen.append(reply.status)
                if reply.status == 401:
                    await api.login()
            return seen

    first = await statuses(5)
    assert first == await statuses(5)
    assert {201, 401} <= set(first)


async def test_revoke_tokens_every_revokes_on_a_random_timer_not_per_call() -> None:
    async with serve(faults=Faults(revoke_tokens_every=HOUR)) as (sim, api):
        for _ in range(20):  # however many calls: the timer, not the calls, decides
            assert (await api.call("POST", "/cases", {})).status == 201
        assert sim.token_revocations == 0
    async with serve(faults=Faults(revoke_tokens_every=1e-9)) as (sim, api):
        assert (await api.call("POST", "/cases", {})).status == 201  # the first call arms it
        refused = await api.call("POST", "/cases", {})  # the timer has run out since
        assert refused.status == 401 and sim.requests[-1].fault == "tokens_revoked"
        assert sim.token_revocations == 1
        sim.faults.revoke_tokens_every = 0.0
        await api.login()
        assert (await api.call("POST", "/cases", {})).status == 201


async def test_issue_expired_tokens_and_its_deprecated_name() -> None:
    async with serve(faults=Faults(issue_expired_tokens=True)) as (sim, api):
        assert (await api.call("POST", "/cases", {})).status == 401
        with pytest.warns(DeprecationWarning, match="issue_expired_tokens"):
            sim.faults.expire_tokens_early = False
        assert sim.faults.issue_expired_tokens is False
        await api.login()
        assert (await api.call("POST", "/cases", {})).status == 201
    with pytest.warns(DeprecationWarning, match="expire_tokens_early"):
        faults = Faults(expire_tokens_early=True)
    assert faults.issue_expired_tokens is True
    with pytest.warns(DeprecationWarning, match="expire_tokens_early"):
        assert getattr(faults, "expire_tokens_early") is True  # noqa: B009 - the old name
    faults.reset()
    assert faults.issue_expired_tokens is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Faults().issue_expired_tokens is False  # the new name never warns
    with pytest.raises(AttributeError):
        getattr(faults, "no_such_knob")  # noqa: B009


# -- key rotation with a publish delay ----------------------------------------------------------
def test_a_ring_publishes_a_delayed_kid_once_its_delay_is_over() -> None:
    now = [100.0]
    ring = KeyRing(clock=lambda: now[0])
    old = ring.kid
    new = ring.rotate(publish_delay=5.0)
    assert ring.kid == new and ring.published(old) and not ring.published(new)
    now[0] = 104.9
    assert not ring.published(new)
    now[0] = 105.0
    assert ring.published(new)
    now[0] = 0.0  # once published, for good
    assert ring.published(new) and not ring.published(str(uuid.uuid4()))
    later = ring.rotate(publish_delay=HOUR)
    ring.publish(later)
    assert ring.published(later)
    with pytest.raises(KeyError):
        ring.publish(str(uuid.uuid4()))


async def test_rotated_kid_signs_before_the_key_endpoint_serves_it(receiver: Receiver) -> None:
    async with serve(webhook_urls=[receiver.url], faults=Faults(key_publish_delay=HOUR)) as (
        sim,
        api,
    ):
        old_kid = sim.kid
        new_kid = sim.rotate_key()
        await api.run("kyc-instant")
        hook = (await receiver.wait_for(1))[0]
        assert verify(sim.public_key_pem(new_kid), hook.signature, hook.body)["kid"] == new_kid
        missing = await api.call("GET", f"/auth/webhooks/key/{new_kid}?pem=true")
        assert missing.status == 404 and missing.body["error"] == "key_not_found"
        assert (await api.call("GET", f"/auth/webhooks/key/{old_kid}?pem=true")).status == 200
        sim.publish_key()
        served = await api.call("GET", f"/auth/webhooks/key/{new_kid}?pem=true")
        assert served.status == 200 and served.body == sim.public_key_pem(new_kid)
        third = sim.rotate_key(publish_delay=0.0)  # the argument wins over the knob
        assert (await api.call("GET", f"/auth/webhooks/key/{third}?pem=true")).status == 200
        with pytest.raises(ValueError, match="publish_delay"):
            sim.rotate_key(publish_delay=-1.0)


async def test_a_receiver_answering_503_until_the_key_is_served_gets_the_same_request_again() -> (
    None
):
    """The platform's retry re-sends the very same request: body and signature, even when the
    key rotated in between; the receiver that answered 503 for an unknown kid succeeds later."""
    seen: list[tuple[bytes, str, int]] = []
    sim_box: list[Simulator] = []

    async def handle(request: web.Request) -> web.Response:
        body, signature = await request.read(), request.headers["JWS-SIGNATURE"]
        sim = sim_box[0]
        kid = json.loads(b64url_decode(signature.split(".")[0]))["kid"]
        verify(sim.public_key_pem(kid), signature, body)
        async with aiohttp.ClientSession() as http:
            url = f"{sim.base_url}/auth/webhooks/key/{kid}?pem=true"
            async with http.get(url) as reply:
                status = 200 if reply.status == 200 else 503
        seen.append((body, signature, status))
        if status == 503:  # the first refusal: now publish it, and rotate again meanwhile
            sim.publish_key(kid)
            sim.rotate_key()
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        options = {"webhook_urls": [str(server.make_url("/hook"))], "webhook_retry_interval": 1.0}
        async with serve(**options) as (sim, api):
            sim_box.append(sim)
            sim.rotate_key(publish_delay=HOUR)
            await api.run("kyc-instant")
            await sim.wait_idle(timeout=10)
    finally:
        await server.close()
    assert [status for *_, status in seen] == [503, 200]
    assert seen[0][:2] == seen[1][:2]  # same body, same signature (old kid, not re-signed)
    assert [a.outcome for a in sim.webhook_attempts] == [503, 200]


# -- POST faults before and after effect ---------------------------------------------------------
def _run_body(case_id: str) -> dict[str, str]:
    return {"caseId": case_id, "workflowDefinitionId": "kyc-basic"}


async def test_post_error_statuses_apply_to_posts_before_effect() -> None:
    faults = Faults(error_statuses=(500,), post_error_statuses=(429, 503), retry_after=0.25)
    async with serve() as (sim, api):
        case_id = await api.new_case()
        sim.faults = faults
        sim.faults.error_rate = 1.0
        seen = set()
        for _ in range(8):
            reply = await api.call("POST", "/workflows/run", _run_body(case_id))
            assert reply.status in (429, 503) and reply.headers["Retry-After"] == "0.25"
            seen.add(reply.status)
        assert seen == {429, 503} and len(sim.workflows) == 0  # nothing took effect
        assert {r.fault for r in sim.requests[-8:]} == {"error"}
        got = await api.call("GET", f"/workflows/{uuid.uuid4()}")
        assert got.status == 500  # GETs keep error_statuses
        with pytest.raises(ValueError, match="post_error_statuses"):
            sim.faults.post_error_statuses = (200,)


@pytest.mark.parametrize("status", [500, 503])
async def test_error_after_effect_status_is_chosen(status: int) -> None:
    async with serve() as (sim, api):
        case_id = await api.new_case()
        sim.faults.error_rate, sim.faults.error_after_effect = 1.0, True
        sim.faults.error_after_effect_status = status
        reply = await api.call("POST", "/workflows/run", _run_body(case_id))
        assert reply.status == status and len(sim.workflows) == 1
        assert ("Retry-After" in reply.headers) is (status == 503)
        assert sim.requests[-1].fault == "error_after_effect"
    with pytest.raises(ValueError, match="error_after_effect_status"):
        Faults(error_after_effect_status=200)


async def test_fail_next_fails_exactly_the_scheduled_calls() -> None:
    async with serve() as (sim, api):
        case_id = await api.new_case()
        sim.fail_next("POST", "/workflows/run", status=503, after_effect=True)
        lost = await api.call("POST", "/workflows/run", _run_body(case_id))
        assert lost.status == 503 and lost.headers["Retry-After"] == "1"
        assert len(sim.workflows) == 1 and sim.requests[-1].fault == "error_after_effect"
        sim.fail_next("post", "/workflows/run", status=429, times=2)
        for _ in range(2):
            assert (await api.call("POST", "/workflows/run", _run_body(case_id))).status == 429
        assert len(sim.workflows) == 1  # before effect: nothing made
        answered = await api.call("POST", "/workflows/run", _run_body(case_id))
        assert answered.status == 201 and len(sim.workflows) == 2
        workflow_id = answered.body["id"]
        sim.fail_next("GET", f"/workflows/{workflow_id}", status=502)  # an exact path
        other = await api.run()
        assert (await api.call("GET", f"/workflows/{other['id']}")).status == 200
        assert (await api.call("GET", f"/workflows/{workflow_id}")).status == 502
        assert (await api.call("GET", f"/workflows/{workflow_id}")).status == 200
        with pytest.raises(ValueError, match="status"):
            sim.fail_next("POST", "/cases", status=200)
        with pytest.raises(ValueError, match="fail_next"):
            sim.fail_next("POST", "cases")
        with pytest.raises(ValueError, match="fail_next"):
            sim.fail_next("POST", "/cases", times=0)


async def test_scheduled_faults_draw_no_dice() -> None:
    """A scheduled fault leaves the seeded random faults where they were."""

    async def run(scheduled: bool) -> list[int]:
        async with serve(seed=3) as (sim, api):
            sim.faults = Faults(error_rate=0.5, error_statuses=(500,))
            if scheduled:
                sim.fail_next("POST", "/cases", status=503)
                await api.call("POST", "/cases", {})
            return [(await api.call("POST", "/cases", {})).status for _ in range(10)]

    assert await run(False) == await run(True)


# -- result lagging completion -------------------------------------------------------------------
async def test_result_delay_answers_result_not_ready_after_completion() -> None:
    async with serve(faults=Faults(result_delay=HOUR)) as (sim, api):
        workflow = await api.run("kyc-instant")
        assert sim.workflow_status(workflow["id"]) == "COMPLETED"
        early = await api.call("GET", f"/workflows/{workflow['id']}/result")
        assert early.status == 409 and early.body["error"] == "result_not_ready"
        sim.faults.result_delay = 0.0
        assert (await api.call("GET", f"/workflows/{workflow['id']}/result")).status == 200
