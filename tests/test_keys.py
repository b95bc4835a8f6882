"""The key store (single-flight, caching, negative cache, fetch budget) and the verifier."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from workflows_async.errors import (
    ConfigurationError,
    KeyUnavailableError,
    NotFoundError,
    RateLimitError,
    ServerError,
    SignatureError,
    TransportError,
)
from workflows_async.jws import b64url_encode
from workflows_async.keys import KeyStore, WebhookVerifier

KID = "0b7e3a52-3c1f-4f0e-9d8a-5e2f6c1a9b47"
BODY = b'{"workflowId":"w-1","status":"COMPLETED"}'


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeFetch:
    """Stands in for ``GET /auth/webhooks/key/{kid}?pem=true``; counts calls."""

    def __init__(self, pems: dict[str, str], *, error: Exception | None = None) -> None:
        self.pems = pems
        self.error = error
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, kid: str) -> str:
        self.calls.append(kid)
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        if kid not in self.pems:
            raise NotFoundError(404, method="GET", path=f"/auth/webhooks/key/{kid}")
        return self.pems[kid]


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(private_key: rsa.RSAPrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def jwk_of(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "n": b64url_encode(numbers.n.to_bytes(256, "big")),
        "e": b64url_encode(numbers.e.to_bytes(3, "big")),
    }


def sign(key: rsa.RSAPrivateKey, header: dict[str, Any], body: bytes = BODY) -> str:
    segment = b64url_encode(json.dumps(header).encode())
    signed = f"{segment}.{b64url_encode(body)}".encode()
    signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    return f"{segment}..{b64url_encode(signature)}"


async def test_concurrent_gets_share_one_fetch(pem: str) -> None:
    fetch = FakeFetch({KID: pem})
    fetch.gate.clear()
    store = KeyStore(fetch)
    waiters = [asyncio.create_task(store.get(KID)) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert fetch.calls == [KID]
    fetch.gate.set()
    keys = await asyncio.gather(*waiters)
    assert all(k is keys[0] for k in keys)
    assert len(fetch.calls) == 1
    assert await store.get(KID) is keys[0]
    assert len(fetch.calls) == 1
    # Issue 10 item 9: a kid is cached exactly as sent; the upper-case form is another kid.
    with pytest.raises(KeyUnavailableError):
        await store.get(KID.upper())
    assert fetch.calls == [KID, KID.upper()]


async def test_unknown_kid_is_negatively_cached(pem: str) -> None:
    # Issue 10 item 9: a kid the API does not serve yet is retryable (503), not forged (401).
    clock = FakeClock()
    fetch = FakeFetch({})
    store = KeyStore(fetch, negative_ttl=300.0, clock=clock)
    with pytest.raises(KeyUnavailableError, match="not known yet"):
        await store.get(KID)
    clock.now += 299.0
    with pytest.raises(KeyUnavailableError, match="not known yet"):
        await store.get(KID)
    assert len(fetch.calls) == 1
    clock.now += 2.0
    fetch.pems[KID] = pem
    await store.get(KID)
    assert len(fetch.calls) == 2


async def test_unusable_key_material_is_negatively_cached() -> None:
    fetch = FakeFetch({KID: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"})
    store = KeyStore(fetch, clock=FakeClock())
    with pytest.raises(SignatureError, match="unusable signing key"):
        await store.get(KID)
    with pytest.raises(SignatureError, match="unknown signing key"):
        await store.get(KID)
    assert len(fetch.calls) == 1


async def test_flood_of_random_kids_is_bounded() -> None:
    clock = FakeClock()
    fetch = FakeFetch({})
    store = KeyStore(fetch, max_fetches=10, per_seconds=60.0, clock=clock)
    kids = [str(uuid.uuid4()) for _ in range(100)]
    results = await asyncio.gather(*(store.get(k) for k in kids), return_exceptions=True)
    assert len(fetch.calls) == 10
    # Issue 10 item 9: unknown kids (404) are retryable now, like a spent budget: all 503.
    assert sum(isinstance(r, KeyUnavailableError) for r in results) == 100
    with pytest.raises(KeyUnavailableError):
        await store.get(str(uuid.uuid4()))
    assert len(fetch.calls) == 10
    clock.now += 60.0  # the window has passed: fetching is allowed again
    with pytest.raises(KeyUnavailableError, match="not known yet"):
        await store.get(str(uuid.uuid4()))
    assert len(fetch.calls) == 11


@pytest.mark.parametrize(
    "error",
    [
        TransportError("connection reset", method="GET", path="/auth/webhooks/key/x"),
        ServerError(502, method="GET", path="/auth/webhooks/key/x"),
        RateLimitError(429, method="GET", path="/auth/webhooks/key/x", retry_after=30.0),
        TimeoutError(),
    ],
)
async def test_fetch_trouble_is_unavailable_and_not_cached(pem: str, error: Exception) -> None:
    fetch = FakeFetch({KID: pem}, error=error)
    store = KeyStore(fetch, clock=FakeClock())
    with pytest.raises(KeyUnavailableError):
        await store.get(KID)
    fetch.error = None
    await store.get(KID)
    assert len(fetch.calls) == 2


async def test_pinned_keys_need_no_fetch(private_key: rsa.RSAPrivateKey, pem: str) -> None:
    jwk_kid = str(uuid.uuid4())
    fetch = FakeFetch({})
    store = KeyStore(fetch, pinned={KID: pem, jwk_kid: jwk_of(private_key)})
    pinned_pem = await store.get(KID)
    pinned_jwk = await store.get(jwk_kid)
    assert pinned_pem.public_numbers() == pinned_jwk.public_numbers()
    assert fetch.calls == []


async def test_without_fetch_only_pinned_keys_work(pem: str) -> None:
    store = KeyStore(None, pinned={KID: pem})
    await store.get(KID)
    with pytest.raises(SignatureError, match="unknown signing key"):
        await store.get(str(uuid.uuid4()))
    other = str(uuid.uuid4())
    store.add(other, pem)
    await store.get(other)


@pytest.mark.parametrize(
    ("kid", "material"),
    [("not-a-uuid", None), (KID, "garbage"), (KID, {"kty": "EC"})],
)
def test_bad_pinned_keys_are_configuration_errors(pem: str, kid: str, material: Any) -> None:
    with pytest.raises(ConfigurationError):
        KeyStore(None, pinned={kid: pem if material is None else material})


@pytest.mark.parametrize("kid", ["../auth", "abc", f"{{{KID}}}", f"{KID}?pem=false", ""])
async def test_non_uuid_kid_never_fetches(pem: str, kid: str) -> None:
    fetch = FakeFetch({kid: pem})
    store = KeyStore(fetch)
    with pytest.raises(SignatureError, match="kid"):
        await store.get(kid)
    assert fetch.calls == []


async def test_cancelled_waiter_does_not_break_the_shared_fetch(pem: str) -> None:
    fetch = FakeFetch({KID: pem})
    fetch.gate.clear()
    store = KeyStore(fetch)
    first = asyncio.create_task(store.get(KID))
    second = asyncio.create_task(store.get(KID))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    fetch.gate.set()
    key = await second
    assert first.cancelled()
    assert fetch.calls == [KID]
    assert await store.get(KID) is key


async def test_fetch_finishes_even_if_every_waiter_is_cancelled(pem: str) -> None:
    fetch = FakeFetch({KID: pem})
    fetch.gate.clear()
    store = KeyStore(fetch)
    waiter = asyncio.create_task(store.get(KID))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.sleep(0.01)
    fetch.gate.set()
    await asyncio.sleep(0.01)
    await store.get(KID)
    assert fetch.calls == [KID]


async def test_verifier_end_to_end(private_key: rsa.RSAPrivateKey, pem: str) -> None:
    fetch = FakeFetch({KID: pem})
    verifier = WebhookVerifier(KeyStore(fetch))
    good = sign(private_key, {"alg": "RS256", "kid": KID, "typ": "JWT"})
    header = await verifier.verify(good, BODY)
    assert (header.alg, header.kid) == ("RS256", KID)

    with pytest.raises(SignatureError, match="does not match"):
        await verifier.verify(good, BODY.replace(b"COMPLETED", b"FAILED"))
    forged = sign(
        rsa.generate_private_key(public_exponent=65537, key_size=2048), {"alg": "RS256", "kid": KID}
    )
    with pytest.raises(SignatureError, match="does not match"):
        await verifier.verify(forged, BODY)
    for missing in (None, ""):
        with pytest.raises(SignatureError, match="missing JWS-SIGNATURE header"):
            await verifier.verify(missing, BODY)
    assert fetch.calls == [KID]


async def test_verifier_refuses_before_any_key_lookup() -> None:
    fetch = FakeFetch({})
    verifier = WebhookVerifier(KeyStore(fetch))
    segment = b64url_encode(json.dumps({"alg": "HS256", "kid": KID}).encode())
    with pytest.raises(SignatureError, match="not allowed"):
        await verifier.verify(f"{segment}..AAAA", BODY)
    assert fetch.calls == []


@pytest.mark.parametrize("algorithms", [set(), {"HS256"}, {"RS256", "none"}, "RS256"])
def test_verifier_refuses_bad_algorithm_settings(algorithms: Any) -> None:
    with pytest.raises(ConfigurationError):
        WebhookVerifier(KeyStore(None), algorithms=algorithms)


@pytest.mark.parametrize(
    "bad",
    [
        {"negative_ttl": -1.0},
        {"unusable_ttl": -1.0},
        {"max_fetches": -1},
        {"per_seconds": 0.0},
        {"max_unknown": 0},
    ],
)
def test_store_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        KeyStore(None, **bad)


async def test_fetched_keys_are_checked_again_after_their_ttl(pem: str) -> None:
    clock = FakeClock()
    fetch = FakeFetch({KID: pem})
    store = KeyStore(fetch, key_ttl=100, clock=clock)
    first = await store.get(KID)
    clock.now += 50
    assert await store.get(KID) is first and len(fetch.calls) == 1
    clock.now += 60  # past the ttl: checked again, in the background
    fetch.error = TransportError("down")
    assert await store.get(KID) is first  # answered at once with the known key
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(fetch.calls) == 2
    assert await store.get(KID) is first  # the API could not answer: the known key stays
    fetch.error = None
    del fetch.pems[KID]  # the key was revoked
    clock.now += 61  # the fetch budget window has moved on
    assert await store.get(KID) is first  # starts the re-check
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(fetch.calls) == 3
    with pytest.raises(SignatureError):
        await store.get(KID)  # the API said 404: no longer trusted
    assert len(fetch.calls) == 3


async def test_a_slow_key_endpoint_is_given_up_on(pem: str) -> None:
    fetch = FakeFetch({KID: pem})
    fetch.gate.clear()  # never answers
    store = KeyStore(fetch, fetch_timeout=0.05)
    with pytest.raises(KeyUnavailableError):
        await store.get(KID)


async def test_pinned_keys_never_expire(pem: str) -> None:
    clock = FakeClock()
    store = KeyStore(None, pinned={KID: pem}, key_ttl=1, clock=clock)
    key = await store.get(KID)
    clock.now += 10_000
    assert await store.get(KID) is key
