"""The webhook sub-app: strict verification, clear 4xx answers, hooks off the ack path."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from eventually import eventually
from stack import Stack, receiver, stack

import workflows_async as wa
from workflows_async.testing import WorkflowDefinition, generate_signing_key, sign_webhook

KEY_ROUTE = "GET /auth/webhooks/key/{kid}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def event_body(workflow_id: str, status: str = "COMPLETED", **extra: str) -> bytes:
    return json.dumps({"workflowId": workflow_id, "status": status, **extra}).encode()


async def post(url: str, body: bytes, signature: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["JWS-SIGNATURE"] = signature
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status, await r.text()


async def pending_slow_workflow(s: Stack) -> tuple[str, asyncio.Task[wa.WorkflowOutcome]]:
    s.sim.faults.drop_webhooks = 1.0
    s.sim.define("slow", WorkflowDefinition(statuses=("IN_PROGRESS", "COMPLETED"), duration=500))
    case = await s.session.create_case()
    workflow = await s.session.run_workflow(case.id, "slow")
    task = asyncio.create_task(s.session.wait(workflow.id, timeout=60))
    await eventually(lambda: workflow.id in s.session.pending(), "the wait pending")
    return workflow.id, task


async def test_a_correctly_signed_event_resolves_the_waiter() -> None:
    async with stack() as s:
        workflow_id, task = await pending_slow_workflow(s)
        await s.sim.complete(workflow_id)  # forces the final status, and its webhook
        s.sim.faults.drop_webhooks = 0.0
        body = event_body(workflow_id)
        status, _ = await post(
            s.webhook_url, body, sign_webhook(body, s.sim.private_key, s.sim.kid)
        )
        assert status == 200
        outcome = await task
        assert outcome.channel in (wa.Channel.WEBHOOK, wa.Channel.POLL)
        assert outcome.workflow.status == "COMPLETED"


async def test_unencoded_payload_mode_is_accepted() -> None:
    async with stack() as s:
        body = event_body("some-workflow", "IN_PROGRESS")
        signature = sign_webhook(body, s.sim.private_key, s.sim.kid, b64=False)
        assert (await post(s.webhook_url, body, signature))[0] == 200


@pytest.mark.parametrize(
    "kind", ["missing", "bad-signature", "alg-none", "hs256", "non-uuid", "altered"]
)
async def test_forged_webhooks_are_refused_and_resolve_nothing(kind: str) -> None:
    async with stack() as s:
        workflow_id, task = await pending_slow_workflow(s)
        body = event_body(workflow_id)
        pem = s.sim.public_key_pem().encode()
        if kind == "missing":
            signature = None
        elif kind == "bad-signature":
            signature = sign_webhook(body, generate_signing_key(), s.sim.kid)
        elif kind == "alg-none":
            signature = b64(json.dumps({"alg": "none", "kid": s.sim.kid}).encode()) + ".."
        elif kind == "hs256":
            header = b64(json.dumps({"alg": "HS256", "kid": s.sim.kid}).encode())
            mac = hmac.new(pem, f"{header}.{b64(body)}".encode(), hashlib.sha256).digest()
            signature = f"{header}..{b64(mac)}"
        elif kind == "non-uuid":
            header = b64(json.dumps({"alg": "RS256", "kid": "../../auth/authorize"}).encode())
            signature = f"{header}..{b64(b'x' * 256)}"
        else:  # a genuine signature over another body
            signature = sign_webhook(
                event_body(workflow_id, "FAILED"), s.sim.private_key, s.sim.kid
            )
        status, text = await post(s.webhook_url, body, signature)
        assert status == 401
        assert json.loads(text)["reason"]
        await asyncio.sleep(0.05)
        assert not task.done()
        assert workflow_id in s.session.pending()
        if kind in ("missing", "alg-none", "hs256", "non-uuid"):
            assert s.sim.calls_by_route[KEY_ROUTE] == 0
        task.cancel()


async def test_unknown_kid_flood_makes_bounded_key_fetches() -> None:
    async with stack() as s:
        workflow_id, task = await pending_slow_workflow(s)
        attacker = generate_signing_key()
        body = event_body(workflow_id)
        answers = await asyncio.gather(
            *(
                post(s.webhook_url, body, sign_webhook(body, attacker, str(uuid.uuid4())))
                for _ in range(60)
            )
        )
        statuses = {status for status, _ in answers}
        assert statuses <= {401, 503}
        assert s.sim.calls_by_route[KEY_ROUTE] <= 10
        assert not task.done()
        task.cancel()


async def test_same_new_kid_fetched_once_under_concurrency() -> None:
    async with stack() as s:
        body = event_body("wf-any", "IN_PROGRESS")
        signature = sign_webhook(body, s.sim.private_key, s.sim.kid)
        answers = await asyncio.gather(*(post(s.webhook_url, body, signature) for _ in range(30)))
        assert {status for status, _ in answers} == {200}
        assert s.sim.calls_by_route[KEY_ROUTE] == 1


async def test_rotated_key_is_fetched_and_accepted() -> None:
    async with stack() as s:
        outcome = await s.session.run_and_wait((await s.session.create_case()).id, "kyc-basic")
        assert outcome.channel is wa.Channel.WEBHOOK
        s.sim.rotate_key()
        outcome = await s.session.run_and_wait((await s.session.create_case()).id, "kyc-basic")
        assert outcome.channel is wa.Channel.WEBHOOK
        assert s.sim.calls_by_route[KEY_ROUTE] == 2


async def test_bad_bodies_get_clear_4xx() -> None:
    async with stack(max_webhook_body=1024) as s:
        key, kid = s.sim.private_key, s.sim.kid
        for body, expected in [
            (b"not json", 400),
            (b"[1, 2]", 400),
            (b'{"status": "COMPLETED"}', 400),
            (b'{"workflowId": "w"}', 400),
            (b"{" + b" " * 2048 + b"}", 413),
        ]:
            status, text = await post(s.webhook_url, body, sign_webhook(body, key, kid))
            assert status == expected, body[:20]
            assert json.loads(text)["status"] == expected


async def test_key_endpoint_down_answers_503_so_the_platform_retries() -> None:
    async with stack() as s:
        s.sim.faults.key_error_rate = 1.0
        body = event_body("wf-1")
        status, _ = await post(
            s.webhook_url, body, sign_webhook(body, s.sim.private_key, s.sim.kid)
        )
        assert status == 503
        s.sim.faults.key_error_rate = 0.0
        status, _ = await post(
            s.webhook_url, body, sign_webhook(body, s.sim.private_key, s.sim.kid)
        )
        assert status == 200


async def test_slow_and_failing_hooks_never_delay_the_ack_or_break_waiters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="workflows_async.hooks")

    def failures() -> int:
        return sum("failed" in r.getMessage() for r in caplog.records if r.name.endswith("hooks"))

    async with stack() as s:
        release = asyncio.Event()
        calls: list[str] = []

        @s.session.on_event
        async def slow(event: wa.WebhookEvent) -> None:
            await release.wait()
            calls.append("slow")

        @s.session.on_event()
        def failing(event: wa.WebhookEvent) -> None:
            raise RuntimeError("boom")

        body = event_body("nobody-waits-for-this", "COMPLETED", eventId="e-1")
        status, _ = await post(
            s.webhook_url, body, sign_webhook(body, s.sim.private_key, s.sim.kid)
        )
        assert status == 200  # answered while the slow hook is still blocked
        assert calls == []
        outcome = await s.session.run_and_wait((await s.session.create_case()).id, "kyc-basic")
        assert outcome.channel is wa.Channel.WEBHOOK
        release.set()
        await eventually(
            lambda: "slow" in calls and failures() >= 2, "the hooks ran; two failures reported"
        )


async def test_verification_off_is_refused_for_a_remote_api(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(wa.ConfigurationError, match="local"):
        wa.Session("https://api.example.test", verify_webhooks=False)
    forced = wa.Session("https://api.example.test", verify_webhooks=False, force_unverified=True)
    with caplog.at_level(logging.WARNING, logger="workflows_async"):
        forced.webhook_app()
    assert "NOT verified" in caplog.text
    await forced.close()


async def test_unverified_local_receiver_accepts_unsigned_events() -> None:
    async with stack(verify_webhooks=False) as s:
        workflow_id, task = await pending_slow_workflow(s)
        await s.sim.complete(workflow_id)  # its own webhook is dropped: we send one, unsigned
        status, _ = await post(s.webhook_url, event_body(workflow_id, eventId="unsigned-1"), None)
        assert status == 200
        outcome = await task
        assert outcome.workflow.status == "COMPLETED"
        assert s.session.stats().webhooks.delivered >= 1


async def test_once_hooks_need_distinct_names() -> None:
    session = wa.Session("https://api.example.test")
    session.on_event(lambda event: None, once=True)
    with pytest.raises(wa.ConfigurationError, match="name="):
        session.on_event(lambda event: None, once=True)
    session.on_event(lambda event: None, once=True, name="second")
    session.on_event(lambda event: None)  # plain hooks may share a name
    await session.close()


async def test_a_body_arriving_in_pieces_is_read_whole() -> None:
    async with stack(max_webhook_body=4096) as s:
        body = event_body("wf-split", "IN_PROGRESS", note="x" * 1500)
        signature = sign_webhook(body, s.sim.private_key, s.sim.kid)

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 300):
                yield body[start : start + 300]
                await asyncio.sleep(0.01)  # separate packets, and chunked encoding

        headers = {"Content-Type": "application/json", "JWS-SIGNATURE": signature}
        async with aiohttp.ClientSession() as http:
            async with http.post(s.webhook_url, data=pieces(), headers=headers) as r:
                assert r.status == 200
            big = b'{"workflowId": "w", "status": "X", "pad": "' + b"y" * 5000 + b'"}'

            async def big_pieces() -> AsyncIterator[bytes]:
                for start in range(0, len(big), 1000):
                    yield big[start : start + 1000]
                    await asyncio.sleep(0.01)

            big_headers = {
                **headers,
                "JWS-SIGNATURE": sign_webhook(big, s.sim.private_key, s.sim.kid),
            }
            async with http.post(s.webhook_url, data=big_pieces(), headers=big_headers) as r:
                assert r.status == 413


async def test_signing_keys_are_fetched_without_credentials() -> None:
    async with stack() as s:
        broken = wa.Session(
            s.sim.base_url, wa.KeySecretAuth(s.sim.key, "wrong"), allow_insecure_http=True
        )
        async with broken, receiver(broken) as url:
            body = event_body("wf-1", "IN_PROGRESS")
            signature = sign_webhook(body, s.sim.private_key, s.sim.kid)
            assert (await post(url, body, signature))[0] == 200
        assert s.sim.calls_by_route["POST /auth/authorize"] <= 1  # only the stack's own session


async def test_pinned_keys_are_the_only_ones_trusted() -> None:
    async with stack() as s:
        pinned = wa.Session(
            s.sim.base_url,
            allow_insecure_http=True,
            webhook_keys={s.sim.kid: s.sim.public_key_pem()},
        )
        async with pinned, receiver(pinned) as url:
            body = event_body("wf-1", "IN_PROGRESS")
            good = sign_webhook(body, s.sim.private_key, s.sim.kid)
            assert (await post(url, body, good))[0] == 200
            new_kid = s.sim.rotate_key()
            rotated = sign_webhook(body, s.sim.private_key, new_kid)
            assert (await post(url, body, rotated))[0] == 401
        assert s.sim.calls_by_route[KEY_ROUTE] == 0


async def test_hook_calls_beyond_the_pending_bound_are_skipped() -> None:
    from workflows_async.hooks import EventHooks

    async def claim(key: str, ttl: float) -> bool:
        return True

    hooks = EventHooks(claim, max_concurrency=2, max_pending=5)
    release = asyncio.Event()

    async def slow(event: wa.WebhookEvent) -> None:
        await release.wait()

    hooks.add(slow)
    for i in range(8):
        hooks.dispatch(wa.WebhookEvent(workflow_id=f"w{i}", status="COMPLETED"))
    assert hooks.dropped == 3
    release.set()
    await hooks.drain()


async def test_a_closed_session_answers_503_not_500() -> None:
    async with stack() as s:
        body = event_body("wf-1", "COMPLETED")
        signature = sign_webhook(body, s.sim.private_key, s.sim.kid)
        await s.session.close()
        status, text = await post(s.webhook_url, body, signature)
        assert status == 503
        assert "SessionClosedError" in json.loads(text)["reason"]
