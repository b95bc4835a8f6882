"""The synchronous publish path (issue 16): over a bus that publishes without awaiting (the
in-process bus), a started engine answers a webhook's publish with no coroutine of ours, and
the receiver takes that answer; anything else (an engine not started, a closed one, a bus that
may await) still goes the awaiting way, with the same answers as before."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

import workflows_async as wa
from workflows_async.bus import InMemoryBus, PublishOnce
from workflows_async.engine import WaitEngine
from workflows_async.statuses import StatusSet
from workflows_async.testing import generate_signing_key, public_key_pem, sign_webhook
from workflows_async.webhooks import SIGNATURE_HEADER

KID = "6f1c2b8e-4a10-4c1e-9d55-0b6f9c1e7a42"
KEY = generate_signing_key()


async def never(workflow_id: str) -> wa.Workflow:
    raise AssertionError("no poll expected")


def engine(bus: InMemoryBus) -> WaitEngine:
    return WaitEngine(statuses=StatusSet(), policy=wa.PollPolicy(), bus=bus, poll=never)


def event(wid: str = "wf-1", status: str = "COMPLETED", event_id: str = "e-1") -> wa.WebhookEvent:
    return wa.WebhookEvent(workflow_id=wid, status=status, event_id=event_id)


def delivery(event_id: str | None = None) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {"workflowId": "wf-1", "status": "COMPLETED", "eventId": event_id or str(uuid.uuid4())}
    ).encode()
    return {SIGNATURE_HEADER: sign_webhook(body, KEY, KID)}, body


def session() -> wa.Session:
    return wa.Session(
        "http://127.0.0.1:9",  # never called: the signing key is pinned
        wa.TokenAuth("unused"),
        allow_insecure_http=True,
        webhook_keys={KID: public_key_pem(KEY)},
    )


async def test_a_started_engine_publishes_now_and_says_what_it_did() -> None:
    w = engine(InMemoryBus())
    try:
        assert w.publish_now(event()) is None  # not started: publish() starts it
        await w.start()
        assert w.publish_now(event()) == "published"
        assert w.publish_now(event()) == "duplicate"
        assert w.registry.dispatched == 1
    finally:
        await w.close()
    assert w.publish_now(event(event_id="e-2")) is None  # closed: publish() refuses


async def test_a_bus_whose_publish_may_await_is_left_to_publish() -> None:
    class SlowBus(InMemoryBus):
        async def publish(self, event: wa.WebhookEvent, *, terminal: bool) -> bool:
            await asyncio.sleep(0)
            return await super().publish(event, terminal=terminal)

    w = engine(SlowBus())
    try:
        await w.start()
        assert w.publish_now(event()) is None
        assert await w.publish(event()) is True
        assert await w.publish(event()) is True  # a duplicate, acknowledged
    finally:
        await w.close()


class DownBus(InMemoryBus):
    """A bus that cannot send anything right now."""

    def publish_once_now(
        self, event: wa.WebhookEvent, *, terminal: bool, mark: str, mark_ttl: float
    ) -> PublishOnce | None:
        return "unsent"


async def test_an_event_the_bus_could_not_send_is_handled_here_when_someone_waits() -> None:
    w = engine(DownBus())
    try:
        await w.start()
        assert w.publish_now(event("nobody-waits", event_id="e-0")) == "not_published"
        waiter = asyncio.create_task(w.completion("wf-1", first_poll=3600))
        await asyncio.sleep(0.01)
        assert w.publish_now(event("wf-1")) == "published"
        done = await asyncio.wait_for(waiter, 5)
        assert done.channel is wa.Channel.WEBHOOK
    finally:
        await w.close()


async def test_the_receiver_of_a_started_session_publishes_without_awaiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = session()
    core = s.webhook_core()
    try:
        headers, body = delivery()
        assert (await core.receive("POST", headers, body)).status == 200  # starts the engine

        async def awaited(event: wa.WebhookEvent) -> bool:
            raise AssertionError("the publish was awaited")

        monkeypatch.setattr(s._waiting, "publish", awaited)
        headers, body = delivery("e-2")
        answer = await core.receive("POST", headers, body)
        assert (answer.status, answer.reason) == (200, "accepted")
        again = await core.receive("POST", headers, body)  # the platform's retry
        assert (again.status, again.reason) == (200, "accepted")
        webhooks = s.stats().webhooks
        assert (webhooks.accepted, webhooks.duplicates) == (2, 1)
    finally:
        await s.close()


async def test_a_session_never_started_is_started_by_its_first_webhook() -> None:
    s = session()
    core = s.webhook_core()
    try:
        headers, body = delivery()
        assert (await core.receive("POST", headers, body)).status == 200
        assert s._waiting._started
        done = await asyncio.wait_for(s._waiting.completion("wf-1", first_poll=3600), 5)
        assert done.channel is wa.Channel.WEBHOOK  # the event was published
    finally:
        await s.close()


async def test_a_session_closed_after_webhooks_answers_503_unavailable() -> None:
    s = session()
    core = s.webhook_core()
    headers, body = delivery()
    assert (await core.receive("POST", headers, body)).status == 200  # the fast path is on
    await s.close()
    headers, body = delivery("e-2")
    answer = await core.receive("POST", headers, body)
    assert answer.status == 503
    assert answer.reason == "event not accepted now (SessionClosedError)"
    assert s.stats().webhooks.refused == {"unavailable": 1}


async def test_a_workflow_ended_by_an_event_from_elsewhere_takes_no_more_events() -> None:
    w = engine(InMemoryBus())
    seen: list[str] = []
    w.hooks.add(lambda e: seen.append(e.status))
    try:
        await w.start()
        w._deliver(event("wf-1", "FAILED", "e-0"))  # as a bus catching up delivers it
        assert w.publish_now(event("wf-1", "COMPLETED", "e-1")) == "published"  # acknowledged
        assert w.publish_now(event("wf-1", "IN_PROGRESS", "e-2")) == "published"
        await w.hooks.drain()
        assert seen == ["FAILED"]  # but nothing more dispatched
        assert w.registry.dispatched == 1 and w.registry.duplicates == 2
    finally:
        await w.close()
