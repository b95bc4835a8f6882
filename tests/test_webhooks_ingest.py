"""The receiving path does no work it need not do (issue 16): the signature header is parsed
once, a held key verifies without a wait, a body that has arrived is not read again chunk by
chunk, and no span work is done when nothing records spans. Every check still happens."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

import workflows_async.keys as keys_module
import workflows_async.webhooks as webhooks_module
from workflows_async._metrics import Recorder
from workflows_async.errors import SignatureError
from workflows_async.events import WebhookEvent
from workflows_async.jws import b64url_decode, parse_signature
from workflows_async.keys import KeyStore, WebhookVerifier
from workflows_async.testing import generate_signing_key, public_key_pem, serve, sign_webhook
from workflows_async.webhooks import SIGNATURE_HEADER, WebhookCore, WebhookReceiver

KID = "6f1c2b8e-4a10-4c1e-9d55-0b6f9c1e7a42"
KEY = generate_signing_key()
PEM = public_key_pem(KEY)


def delivery(workflow_id: str = "wf-1") -> tuple[dict[str, str], bytes]:
    body = json.dumps({"workflowId": workflow_id, "status": "COMPLETED"}).encode()
    return {SIGNATURE_HEADER: sign_webhook(body, KEY, KID)}, body


class Published:
    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []

    async def __call__(self, event: WebhookEvent) -> bool:
        self.events.append(event)
        return True


class NeverAwaited(KeyStore):
    async def get(self, kid: str) -> RSAPublicKey:
        raise AssertionError("a held key was awaited")


async def test_a_held_key_verifies_without_awaiting_the_store() -> None:
    published = Published()
    core = WebhookCore(WebhookVerifier(NeverAwaited(None, pinned={KID: PEM})), published)
    headers, body = delivery()
    answer = await core.receive("POST", headers, body)
    assert (answer.status, answer.reason) == (200, "accepted")
    assert [e.workflow_id for e in published.events] == ["wf-1"]
    forged_headers, _ = delivery("wf-2")
    refused = await core.receive("POST", forged_headers, body)  # a signature of another body
    assert (refused.status, refused.reason) == (401, "signature does not match")


async def test_the_signature_header_is_parsed_once_per_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def counting(value: str, **options: object) -> object:
        calls.append(value)
        return parse_signature(value, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(keys_module, "parse_signature", counting)
    core = WebhookCore(WebhookVerifier(KeyStore(None, pinned={KID: PEM})), Published())
    headers, body = delivery()
    assert (await core.receive("POST", headers, body)).status == 200
    assert len(calls) == 1


async def test_a_header_parsed_under_other_rules_is_refused() -> None:
    verifier = WebhookVerifier(KeyStore(None, pinned={KID: PEM}))  # RS256 only
    headers, body = delivery()
    header = json.dumps({"alg": "PS256", "kid": KID}).encode()
    segment = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
    value = segment + ".." + headers[SIGNATURE_HEADER].rsplit(".", 1)[1]
    sig = parse_signature(value, algorithms={"PS256"})
    with pytest.raises(SignatureError, match="algorithm not allowed"):
        verifier.verify_held(sig, body)
    with pytest.raises(SignatureError, match="algorithm not allowed"):
        await verifier.verify_parsed(sig, body)


async def _serve(core: WebhookCore) -> AsyncIterator[str]:
    app = web.Application()
    app.add_subapp("/webhooks", WebhookReceiver.from_core(core).app())
    async with serve(app) as served:
        yield f"{served.url}/webhooks/"


async def test_a_body_that_has_arrived_is_taken_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_chunks(request: web.Request) -> AsyncIterator[bytes]:
        raise AssertionError("read chunk by chunk")

    monkeypatch.setattr(webhooks_module, "_chunks", no_chunks)
    published = Published()
    core = WebhookCore(WebhookVerifier(KeyStore(None, pinned={KID: PEM})), published)
    headers, body = delivery()
    async for url in _serve(core):
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
            assert r.status == 200
            assert await r.read() == b'{"status": 200, "reason": "accepted"}'
            assert r.headers["Content-Type"] == "application/json"
    assert [e.raw for e in published.events] == [body]


def test_no_span_work_when_nothing_records_spans() -> None:
    pytest.importorskip("opentelemetry")
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    from workflows_async import _otel

    otel = _otel.load(NoOpTracerProvider(), NoOpMeterProvider())
    assert otel is not None
    recorder = Recorder(otel=otel)
    assert recorder.webhook_span() is None
    recorder.webhook_accepted(None)
    assert recorder.webhooks_accepted == 1


class PublishedNow(Published):
    """A publish that answers without a wait with ``answer`` (None: await it)."""

    def __init__(self, answer: str | None) -> None:
        super().__init__()
        self.answer = answer
        self.now: list[WebhookEvent] = []

    def publish_now(self, event: WebhookEvent) -> str | None:
        self.now.append(event)
        return self.answer


@pytest.mark.parametrize(
    ("answer", "status", "reason", "counted"),
    [
        ("published", 200, "accepted", "accepted"),
        ("duplicate", 200, "accepted", "duplicate"),
        ("in_progress", 503, "event could not be published; retry later", "in_progress"),
        ("not_published", 503, "event could not be published; retry later", "not_published"),
    ],
)
async def test_an_answer_without_a_wait_is_taken_as_it_is(
    answer: str, status: int, reason: str, counted: str
) -> None:
    publish = PublishedNow(answer)
    recorder = Recorder()
    verifier = WebhookVerifier(KeyStore(None, pinned={KID: PEM}))
    core = WebhookCore(verifier, publish, publish_now=publish.publish_now, recorder=recorder)
    headers, body = delivery()
    got = await core.receive("POST", headers, body)
    assert (got.status, got.reason) == (status, reason)
    assert [e.raw for e in publish.now] == [body] and publish.events == []  # never awaited
    stats = recorder.snapshot().webhooks
    seen = {"accepted": stats.accepted, "duplicate": stats.duplicates, **stats.refused}
    assert {name: n for name, n in seen.items() if n} == {counted: 1}


async def test_no_answer_without_a_wait_means_publish_is_awaited() -> None:
    publish = PublishedNow(None)
    verifier = WebhookVerifier(KeyStore(None, pinned={KID: PEM}))
    core = WebhookCore(verifier, publish, publish_now=publish.publish_now)
    headers, body = delivery()
    assert (await core.receive("POST", headers, body)).status == 200
    assert len(publish.now) == 1 and [e.raw for e in publish.events] == [body]


def test_no_span_is_started_while_no_sdk_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry")
    from opentelemetry import trace

    from workflows_async import _otel

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)  # whatever tests before set
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    otel = _otel.load()  # the global provider's proxy
    assert otel is not None

    def start_span(*args: object, **kwargs: object) -> None:
        raise AssertionError("a span was started")

    monkeypatch.setattr(otel.tracer, "start_span", start_span)
    assert Recorder(otel=otel).webhook_span() is None


def test_spans_record_once_an_sdk_is_set_later() -> None:
    pytest.importorskip("opentelemetry.sdk")
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from workflows_async import _otel
        from workflows_async._metrics import Recorder

        recorder = Recorder(otel=_otel.load())
        assert recorder.webhook_span() is None  # no SDK yet
        trace.set_tracer_provider(TracerProvider())
        span = recorder.webhook_span()
        assert span is not None and span.is_recording()
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.stdout.strip() == "ok", done.stderr


_OLD_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def regex_b64url_decode(text: str) -> bytes:
    """The decoder as it was (regex, decode, re-encode): the oracle for the C-based one."""
    if not _OLD_ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        raise ValueError("not canonical base64url")
    return data


def outcome(text: str) -> bytes | str:
    try:
        return b64url_decode(text)
    except ValueError:
        return "refused"


def oracle(text: str) -> bytes | str:
    try:
        return regex_b64url_decode(text)
    except ValueError:
        return "refused"


TRICKY = "ABCDEFabcdef0123456789-_+/= \n\t.\x00\u00e9"
ENCODED = st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(alphabet=TRICKY, max_size=12), st.text(max_size=8), ENCODED))
def test_b64url_decode_refuses_exactly_what_the_regex_decoder_refused(text: str) -> None:
    assert outcome(text) == oracle(text)
