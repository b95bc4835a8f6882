"""Key rotation (issue 10, item 9): a kid the key endpoint does not serve yet is retryable (503)
and re-checked within seconds; a kid is used exactly as sent; a flood of random kids neither
makes unbounded fetches nor starves a new legitimate kid."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from workflows_async.errors import KeyUnavailableError, NotFoundError, SignatureError
from workflows_async.events import WebhookEvent
from workflows_async.jws import check_kid, parse_signature
from workflows_async.keys import KeyStore, WebhookVerifier
from workflows_async.testing import generate_signing_key, public_key_pem, sign_webhook
from workflows_async.webhooks import SIGNATURE_HEADER, WebhookReceiver

KID = "0b7e3a52-3c1f-4f0e-9d8a-5e2f6c1a9b47"
BODY = b'{"workflowId":"w-1","status":"COMPLETED"}'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class KeyEndpoint:
    """A case-sensitive key endpoint, like the platform's: serves exactly the kids it has."""

    def __init__(self) -> None:
        self.pems: dict[str, str] = {}
        self.calls: list[str] = []

    async def __call__(self, kid: str) -> str:
        self.calls.append(kid)
        if kid not in self.pems:
            raise NotFoundError(404, method="GET", path="/auth/webhooks/key/<kid>")
        return self.pems[kid]


async def test_a_kid_not_served_yet_is_retryable_and_rechecked_within_seconds() -> None:
    clock, endpoint = Clock(), KeyEndpoint()
    store = KeyStore(endpoint, clock=clock)
    for _ in range(3):  # the platform's first attempts, before the key is published
        with pytest.raises(KeyUnavailableError):
            await store.get(KID)
    assert len(endpoint.calls) == 1  # the 404 is remembered, briefly
    endpoint.pems[KID] = public_key_pem(generate_signing_key())
    clock.now += 5.0  # the platform's next retry
    await store.get(KID)
    assert len(endpoint.calls) == 2


async def test_a_revoked_key_is_refused_not_retried() -> None:
    clock, endpoint = Clock(), KeyEndpoint()
    endpoint.pems[KID] = public_key_pem(generate_signing_key())
    store = KeyStore(endpoint, key_ttl=100, clock=clock)
    await store.get(KID)
    del endpoint.pems[KID]
    clock.now += 101
    await store.get(KID)  # starts the background re-check, answers with the known key
    for _ in range(3):
        await asyncio.sleep(0)
    with pytest.raises(SignatureError):
        await store.get(KID)


async def test_unusable_key_material_stays_401() -> None:
    endpoint = KeyEndpoint()
    endpoint.pems[KID] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    store = KeyStore(endpoint, clock=Clock())
    with pytest.raises(SignatureError):
        await store.get(KID)
    with pytest.raises(SignatureError):
        await store.get(KID)
    assert len(endpoint.calls) == 1


async def test_upper_case_kid_is_fetched_exactly_as_sent() -> None:
    endpoint = KeyEndpoint()
    upper = KID.upper()
    endpoint.pems[upper] = public_key_pem(generate_signing_key())
    store = KeyStore(endpoint, clock=Clock())
    await store.get(upper)
    assert endpoint.calls == [upper]
    with pytest.raises(KeyUnavailableError):  # the lower-case kid is another kid
        await store.get(KID)
    assert check_kid(upper) == upper
    header = json.dumps({"alg": "RS256", "kid": upper}).encode()
    from workflows_async.jws import b64url_encode

    sig = parse_signature(f"{b64url_encode(header)}..{b64url_encode(b'x' * 256)}")
    assert sig.header.kid == upper


@pytest.mark.parametrize("kid", [f"{{{KID}}}", KID.replace("-", ""), f"urn:uuid:{KID}", "../x"])
def test_kids_are_still_validated_as_uuids(kid: str) -> None:
    with pytest.raises(SignatureError):
        check_kid(kid)


async def test_random_kid_flood_is_bounded_and_does_not_starve_a_new_kid() -> None:
    clock, endpoint = Clock(), KeyEndpoint()
    store = KeyStore(endpoint, max_fetches=10, per_seconds=60.0, clock=clock)
    legit = str(uuid.uuid4())
    endpoint.pems[legit] = public_key_pem(generate_signing_key())
    got_key = False
    for second in range(0, 120, 5):  # two minutes of flood; the platform retries every 5 s
        clock.now = 1000.0 + second
        flood = [str(uuid.uuid4()) for _ in range(200)]
        results = await asyncio.gather(*(store.get(k) for k in flood), return_exceptions=True)
        assert all(isinstance(r, KeyUnavailableError) for r in results)  # 503, never 401
        try:
            await store.get(legit)
        except KeyUnavailableError:
            continue
        got_key = True
        break
    assert got_key, "a legitimate new kid was starved by a flood of random kids"
    assert clock.now - 1000.0 <= 30.0  # within the platform's retries (5 x 5 s)
    # Fetches stay bounded: the general budget plus the small lane for kids that came back.
    assert len(endpoint.calls) <= 2 * 10
    assert len(store._unknown) <= store._unknown.max_size


async def test_negative_cache_is_bounded() -> None:
    clock, endpoint = Clock(), KeyEndpoint()
    store = KeyStore(endpoint, max_fetches=1000, max_unknown=50, clock=clock)
    for _ in range(200):
        with pytest.raises(KeyUnavailableError):
            await store.get(str(uuid.uuid4()))
    assert len(store._unknown) <= 50


# -- through a real localhost server --------------------------------------------------------


@asynccontextmanager
async def served(
    receiver: WebhookReceiver,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    root = web.Application()
    root.add_subapp("/webhooks", receiver.app())
    async with TestClient(TestServer(root)) as client:
        yield client


async def test_rotation_before_the_key_is_published_loses_no_webhook() -> None:
    clock, endpoint = Clock(), KeyEndpoint()
    published: list[WebhookEvent] = []

    async def publish(event: WebhookEvent) -> bool:
        published.append(event)
        return True

    verifier = WebhookVerifier(KeyStore(endpoint, clock=clock))
    key, new_kid = generate_signing_key(), str(uuid.uuid4()).upper()
    body = b'{"workflowId": "wf-rot", "status": "COMPLETED"}'
    headers = {SIGNATURE_HEADER: sign_webhook(body, key, new_kid)}
    async with served(WebhookReceiver(verifier, publish)) as client:
        statuses = []
        for attempt in range(6):  # the first delivery and the platform's 5 retries
            if attempt == 2:
                endpoint.pems[new_kid] = public_key_pem(key)  # the key endpoint catches up
            async with client.post("/webhooks/", data=body, headers=headers) as r:
                statuses.append(r.status)
            if r.status == 200:
                break
            clock.now += 5.0
        assert statuses[0] == 503 and statuses[-1] == 200
        assert [e.workflow_id for e in published] == ["wf-rot"]
        assert endpoint.calls[0] == new_kid  # fetched exactly as sent
        assert isinstance(client.session, aiohttp.ClientSession)
