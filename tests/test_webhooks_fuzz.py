"""Whatever arrives, the receiver answers a 2xx or a 4xx with a reason; never an exception and
never a 5xx: here the key is pinned and every event is taken, so nothing calls for a 503 (the
last-resort answer to a crash inside). Headers and bodies are drawn by hypothesis, around a
validly signed delivery (one part broken at a time) and from nothing at all."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows_async.events import WebhookEvent
from workflows_async.keys import KeyStore, WebhookVerifier
from workflows_async.testing import generate_signing_key, public_key_pem, sign_webhook
from workflows_async.webhooks import SIGNATURE_HEADER, WebhookCore

KID = "0b3c9a8e-5d21-4f6a-8c3b-7e1d2f4a6b90"
KEY = generate_signing_key()
PEM = public_key_pem(KEY)
BODY = json.dumps({"workflowId": "wf-1", "status": "COMPLETED", "eventId": "e-1"}).encode()
SIGNATURE = sign_webhook(BODY, KEY, KID)

ODD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["", " ", "²", "٣", "9" * 5000, "-1", "1e3", "0x10", "+5", "1_000", "  7 "])
HEADER_NAMES = st.sampled_from(
    ["Content-Length", "content-length", SIGNATURE_HEADER, "jws-signature", "Content-Type"]
)


async def _accept(event: WebhookEvent) -> bool:
    return True


def _core(*, signed: bool) -> WebhookCore:
    verifier = WebhookVerifier(KeyStore(None, pinned={KID: PEM})) if signed else None
    return WebhookCore(verifier, _accept, max_body=4096)


def _answer(core: WebhookCore, method: str, headers: dict[str, str], body: bytes) -> int:
    answer = asyncio.run(core.receive(method, headers, body))
    assert answer.status in (200, 202, 204) or 400 <= answer.status < 500, answer
    if answer.status >= 400:
        assert answer.body, "a refusal says why"
    return answer.status


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=HEADER_NAMES, value=ODD_TEXT, signed=st.booleans())
def test_one_odd_header_on_a_signed_delivery(name: str, value: str, signed: bool) -> None:
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: SIGNATURE}
    headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
    headers[name] = value
    _answer(_core(signed=signed), "POST", headers, BODY)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "post", "GET", "PUT", "", "P\x00ST"]),
    headers=st.dictionaries(HEADER_NAMES | st.text(max_size=10), ODD_TEXT, max_size=5),
    body=st.binary(max_size=6000) | st.just(BODY),
    signed=st.booleans(),
)
def test_anything_at_all(method: str, headers: dict[str, str], body: bytes, signed: bool) -> None:
    _answer(_core(signed=signed), method, headers, body)


def test_the_valid_delivery_is_taken() -> None:
    """The fuzzed shapes sit around a delivery that is accepted as it is."""
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: SIGNATURE}
    assert _answer(_core(signed=True), "POST", headers, BODY) == 200


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw_headers=st.lists(
        st.tuples(
            st.sampled_from([b"content-length", b"jws-signature", b"content-type"])
            | st.binary(max_size=12),
            st.binary(max_size=60),
        ),
        max_size=5,
    ),
    chunks=st.lists(st.binary(max_size=3000), max_size=4),
    signed=st.booleans(),
)
def test_the_asgi_app_answers_any_bytes(
    raw_headers: list[tuple[bytes, bytes]], chunks: list[bytes], signed: bool
) -> None:
    """Header bytes of any kind (ASGI hands them over undecoded) and a body in any chunks."""
    from workflows_async.asgi import WebhookASGIApp

    app = WebhookASGIApp(_core(signed=signed))
    messages: list[MutableMapping[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks or [b""])
    ]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": raw_headers}
    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    assert isinstance(status, int) and (status == 200 or 400 <= status < 500), sent[0]
