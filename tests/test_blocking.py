"""Webhooks outside asyncio frameworks, and Sessions across event loops (issue 12): the Django
async-view recipe, BlockingWebhookReceiver from plain threads (Flask and other sync apps),
Celery-style ``asyncio.run`` per task, and a Session reused from a second loop."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from eventually import eventually

import workflows_async as wa
from workflows_async.testing import Simulator, generate_signing_key, public_key_pem, sign_webhook

KID = "0b7e3a52-3c1f-4f0e-9d8a-5e2f6c1a9b47"
KEY = generate_signing_key()


def delivery(workflow_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"workflowId": workflow_id, "status": "COMPLETED"}).encode()
    # Title-cased, as Django's request.headers and most WSGI frameworks present them.
    return body, {"Jws-Signature": sign_webhook(body, KEY, KID), "Content-Length": str(len(body))}


def new_session() -> wa.Session:
    return wa.Session("https://api.example.test", webhook_keys={KID: public_key_pem(KEY)})


class DjangoLikeRequest:
    """What the recipe's async view reads: ``method``, ``headers``, ``body``."""

    def __init__(self, method: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.headers, self.body = method, headers, body


async def django_view(
    core: wa.WebhookCore, request: DjangoLikeRequest
) -> tuple[int, bytes, dict[str, str]]:
    """The README recipe, minus Django's HttpResponse: the same call, the same answer fields."""
    answer = await core.receive(request.method, request.headers, request.body)
    return answer.status, answer.body, answer.headers


async def test_the_django_async_view_recipe() -> None:
    dispatched: list[str] = []
    async with new_session() as session:
        session.on_event(lambda e: dispatched.append(e.workflow_id))
        core = session.webhook_core()
        body, headers = delivery("wf-django")
        assert (await django_view(core, DjangoLikeRequest("POST", headers, body)))[0] == 200
        forged = DjangoLikeRequest("POST", headers, body.replace(b"COMPLETED", b"FAILED"))
        assert (await django_view(core, forged))[0] == 401
        status, _, answer_headers = await django_view(core, DjangoLikeRequest("GET", {}, b""))
        assert (status, answer_headers["Allow"]) == (405, "POST")
        await eventually(lambda: dispatched, "the event dispatched")
    assert dispatched == ["wf-django"]


def test_blocking_receiver_from_plain_threads() -> None:
    session = new_session()
    dispatched: list[str] = []
    session.on_event(lambda e: dispatched.append(e.workflow_id))
    answers: dict[str, int] = {}

    with wa.BlockingWebhookReceiver(session) as receiver:

        def flask_like_handler(name: str, body: bytes, headers: dict[str, str]) -> None:
            answers[name] = receiver.receive("POST", headers, body).status

        body, headers = delivery("wf-thread")
        first = threading.Thread(target=flask_like_handler, args=("good", body, headers))
        first.start()
        first.join(30)
        threads = [  # then a platform retry and a forgery, at once, from two threads
            threading.Thread(target=flask_like_handler, args=("dup", body, headers)),
            threading.Thread(target=flask_like_handler, args=("forged", body + b" ", headers)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        pending = receiver.run(lambda s: asyncio.sleep(0, result=s.pending()), timeout=10)
        assert pending == []
        receiver.run(lambda s: asyncio.sleep(0.1))  # the hook task runs meanwhile
    assert answers == {"good": 200, "dup": 200, "forged": 401}
    assert dispatched == ["wf-thread"]
    assert session.closed
    assert receiver.receive("POST", headers, body).status == 503  # closed: the platform retries
    with pytest.raises(wa.SessionClosedError):
        receiver.run(lambda s: asyncio.sleep(0))


def test_a_session_reused_in_a_second_event_loop_raises_a_typed_error() -> None:
    session = new_session()  # e.g. module-level, reused by two asyncio.run calls

    async def first() -> None:
        await session.start()

    async def second() -> None:
        with pytest.raises(wa.WrongEventLoopError, match="another event loop"):
            await session.start()
        with pytest.raises(wa.WrongEventLoopError):
            await session.wait("wf-1", timeout=5)
        with pytest.raises(wa.WrongEventLoopError):
            await session.get_workflow("wf-1")
        core = session.webhook_core()  # the webhook path answers 503, the platform retries
        body, headers = delivery("wf-loop")
        assert (await core.receive("POST", headers, body)).status == 503

    asyncio.run(first())
    asyncio.run(second())
    assert isinstance(wa.WrongEventLoopError("x"), wa.SessionClosedError)


def test_celery_style_tasks_open_one_session_per_asyncio_run() -> None:
    async def task(sim_url: str, key: str, secret: str) -> str:
        # One Session per task: its connections live and die with this event loop.
        async with wa.Session(
            sim_url, wa.KeySecretAuth(key, secret), allow_insecure_http=True
        ) as s:
            case = await s.create_case(company_name="Acme")
            outcome = await s.run_and_wait(case.id, "kyc-instant", timeout=30)
            return outcome.workflow.status

    results: list[Any] = []

    async def with_simulator() -> None:
        async with Simulator(time_scale=0.05) as sim:
            args = (sim.base_url, sim.key, sim.secret)
            # Each Celery task body would call asyncio.run(task(...)); run two in threads here,
            # each with its own loop, as two worker processes or two sequential tasks would.
            loop = asyncio.get_running_loop()
            for _ in range(2):
                results.append(await loop.run_in_executor(None, asyncio.run, task(*args)))

    asyncio.run(with_simulator())
    assert results == ["COMPLETED", "COMPLETED"]
