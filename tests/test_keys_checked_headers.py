"""The verifier's checked protected headers (issue 16): a header segment that passed every check
is not decoded again, but the cache never lets through what the full parse refuses: a header
not seen before is checked in full, a forged value around a known header is refused for the
same reason as ever, and distinct headers (a flood) cannot grow the cache past its bound."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workflows_async.keys as keys_module
from workflows_async.errors import SignatureError
from workflows_async.jws import DetachedSignature, b64url_encode, parse_signature
from workflows_async.keys import KeyStore, WebhookVerifier
from workflows_async.testing import generate_signing_key, public_key_pem, sign_webhook

KID = "6f1c2b8e-4a10-4c1e-9d55-0b6f9c1e7a42"
KEY = generate_signing_key()
PEM = public_key_pem(KEY)
BODY = b'{"workflowId":"wf-1","status":"COMPLETED"}'
GOOD = sign_webhook(BODY, KEY, KID)
SEGMENT, _, SIGNATURE = GOOD.partition("..")


def verifier() -> WebhookVerifier:
    return WebhookVerifier(KeyStore(None, pinned={KID: PEM}))


def segment_of(header: dict[str, object]) -> str:
    return b64url_encode(json.dumps(header).encode())


def outcome(parse: object, value: str) -> DetachedSignature | str:
    try:
        return parse(value)  # type: ignore[operator, no-any-return]
    except SignatureError as exc:
        return f"refused: {exc}"


def full(value: str) -> DetachedSignature | str:
    return outcome(lambda v: parse_signature(v, algorithms={"RS256"}, require_kid=True), value)


def counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counted(value: str, **options: object) -> DetachedSignature:
        calls.append(value)
        return parse_signature(value, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(keys_module, "parse_signature", counted)
    return calls


def test_a_known_header_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_parses(monkeypatch)
    v = verifier()
    first = v.parse(GOOD)
    other_body = sign_webhook(b'{"workflowId":"wf-2","status":"COMPLETED"}', KEY, KID)
    second = v.parse(other_body)
    assert len(calls) == 1
    assert first == parse_signature(GOOD) and second == parse_signature(other_body)
    assert v.verify_held(second, b'{"workflowId":"wf-2","status":"COMPLETED"}') == first.header


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "none", "kid": KID}, "algorithm not allowed"),
        ({"alg": "HS256", "kid": KID}, "algorithm not allowed"),
        ({"alg": "PS256", "kid": KID}, "algorithm not allowed"),  # supported, not allowed here
        ({"alg": "RS256", "kid": "not-a-uuid"}, "kid is not a UUID"),
        ({"alg": "RS256"}, "header has no kid"),
        ({"alg": "RS256", "kid": KID, "crit": ["exp"], "exp": 1}, "crit lists an unsupported"),
        ({"alg": "RS256", "kid": KID, "b64": False}, "b64 false requires crit"),
    ],
)
def test_a_header_not_seen_before_is_checked_in_full(
    header: dict[str, object], reason: str
) -> None:
    v = verifier()
    v.parse(GOOD)  # a known header does not vouch for another one
    with pytest.raises(SignatureError, match=reason):
        v.parse(f"{segment_of(header)}..{SIGNATURE}")
    with pytest.raises(SignatureError, match=reason):  # nor once refused: never kept
        v.parse(f"{segment_of(header)}..{SIGNATURE}")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"{SEGMENT}..", "signature is empty"),
        (f"{SEGMENT}..{SIGNATURE}=", "signature is not base64url"),
        (f"{SEGMENT}..{SIGNATURE[:-1]}+", "signature is not base64url"),
        (f"{SEGMENT}..{SIGNATURE}.", "signature is not a compact JWS"),
        (f"{SEGMENT}.e30.{SIGNATURE}", "signature is not detached"),
        (f"{SEGMENT}...{SIGNATURE}", "signature is not a compact JWS"),
        (f"{SEGMENT}..{SIGNATURE}" + "A" * 8192, "signature header too long"),
        (f"{SEGMENT}x..{SIGNATURE}", "header is not"),
    ],
)
def test_a_forged_value_around_a_known_header_is_refused_as_ever(value: str, reason: str) -> None:
    v = verifier()
    v.parse(GOOD)
    assert isinstance(full(value), str)  # the full parse refuses it...
    with pytest.raises(SignatureError, match=reason):
        v.parse(value)  # ...and so does the verifier that knows the header


def test_a_forged_signature_with_a_known_header_does_not_verify() -> None:
    v = verifier()
    v.parse(GOOD)
    forged = v.parse(sign_webhook(BODY, generate_signing_key(), KID))  # another key's
    with pytest.raises(SignatureError, match="signature does not match"):
        v.verify_held(forged, BODY)
    altered = v.parse(GOOD)
    with pytest.raises(SignatureError, match="signature does not match"):
        v.verify_held(altered, BODY.replace(b"COMPLETED", b"FAILED"))


def test_distinct_headers_cannot_grow_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "_MAX_CHECKED_HEADERS", 4)
    calls = counting_parses(monkeypatch)
    v = verifier()
    values = [f"{segment_of({'alg': 'RS256', 'kid': KID, 'n': n})}..{SIGNATURE}" for n in range(10)]
    for value in values:
        v.parse(value)
        assert len(v._checked) <= 4
    assert len(calls) == 10
    v.parse(values[0])  # pushed out long ago: checked in full again
    assert len(calls) == 11


def test_a_flood_of_distinct_headers_is_bounded_by_default() -> None:
    v = verifier()
    for n in range(3 * keys_module._MAX_CHECKED_HEADERS):
        v.parse(f"{segment_of({'alg': 'RS256', 'kid': KID, 'n': n})}..{SIGNATURE}")
    assert len(v._checked) <= keys_module._MAX_CHECKED_HEADERS


TRICKY = st.sampled_from([".", "..", "=", "+", "/", "A", "-", "_", " ", "\u00e9", "\x00"])


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(GOOD)), TRICKY, st.booleans()), max_size=3),
)
def test_the_verifier_parses_exactly_as_the_full_parse(
    edits: list[tuple[int, str, bool]],
) -> None:
    value = GOOD
    for at, text, insert in edits:  # insert, or overwrite one character
        value = value[:at] + text + value[at + (0 if insert else 1) :]
    v = verifier()
    v.parse(GOOD)  # the header is known
    assert outcome(v.parse, value) == full(value)


def test_a_known_header_with_other_padding_is_not_the_same_header() -> None:
    # A segment is kept exactly as received: the same header JSON encoded otherwise is
    # another segment, checked in full (and padded base64 is refused).
    v = verifier()
    v.parse(GOOD)
    raw = base64.urlsafe_b64decode(SEGMENT + "=" * (-len(SEGMENT) % 4))
    padded = base64.urlsafe_b64encode(raw).decode()
    if padded != SEGMENT:
        with pytest.raises(SignatureError, match="header is not base64url"):
            v.parse(f"{padded}..{SIGNATURE}")


def test_a_held_key_is_checked_whatever_the_store_holds() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    held = {"key": short.public_key()}

    class Store(KeyStore):  # a store that hands out whatever it was given
        def held(self, kid: str) -> rsa.RSAPublicKey | None:
            return held["key"]

    v = WebhookVerifier(Store(None))
    with pytest.raises(SignatureError, match="signing key is too short"):
        v.verify_held(v.parse(GOOD), BODY)
    held["key"] = KEY.public_key()
    assert v.verify_held(v.parse(GOOD), BODY) is not None
    held["key"] = short.public_key()  # another key again: checked again
    with pytest.raises(SignatureError, match="signing key is too short"):
        v.verify_held(v.parse(GOOD), BODY)
