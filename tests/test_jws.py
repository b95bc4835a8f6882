"""Pure tests of detached-JWS parsing and verification (no event loop)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from workflows_async.errors import SignatureError
from workflows_async.jws import (
    DEFAULT_ALGORITHMS,
    b64url_decode,
    b64url_encode,
    check_kid,
    load_public_key,
    parse_signature,
    verify_signature,
)

VECTOR: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "rfc7515-a2.json").read_text(encoding="utf-8")
)
KID = "6f1c1c4e-9a43-4d3a-8d56-2b6a0f8d7e11"
BODY = b'{"workflowId":"w-1","status":"COMPLETED"}'
HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


def sign_raw(key: rsa.RSAPrivateKey, header_json: str, body: bytes, *, b64: bool = True) -> str:
    """Our own tiny signer: a detached compact JWS over ``body``."""
    alg = json.loads(header_json)["alg"]
    segment = b64url_encode(header_json.encode())
    payload = b64url_encode(body).encode() if b64 else body
    digest = HASHES[alg[2:]]
    pad: padding.AsymmetricPadding = (
        padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        if alg.startswith("PS")
        else padding.PKCS1v15()
    )
    signature = key.sign(segment.encode() + b"." + payload, pad, digest)
    return f"{segment}..{b64url_encode(signature)}"


def sign(key: rsa.RSAPrivateKey, header: dict[str, Any], body: bytes = BODY) -> str:
    return sign_raw(key, json.dumps(header), body, b64=header.get("b64", True))


def header_only(header_json: str, signature: bytes = b"x" * 256) -> str:
    return f"{b64url_encode(header_json.encode())}..{b64url_encode(signature)}"


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- RFC 7515 appendix A.2, a published vector -------------------------------------------


@pytest.mark.parametrize("material", ["public_pem", "public_jwk"])
def test_rfc7515_a2_vector_verifies(material: str) -> None:
    payload = VECTOR["payload_utf8"].encode("utf-8")
    assert len(payload) == 70
    sig = parse_signature(VECTOR["detached"], require_kid=False)
    assert sig.header.alg == "RS256"
    assert sig.header.kid is None
    assert sig.header.encoded == VECTOR["protected_header_b64url"]
    verify_signature(sig, payload, load_public_key(VECTOR[material]))


def test_rfc7515_a2_altered_copies_are_rejected() -> None:
    key = load_public_key(VECTOR["public_pem"])
    payload = VECTOR["payload_utf8"].encode("utf-8")
    sig = parse_signature(VECTOR["detached"], require_kid=False)

    altered_payload = bytearray(payload)
    altered_payload[10] ^= 0x01
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(sig, bytes(altered_payload), key)

    header, _, signature = VECTOR["detached"].split(".")
    raw = bytearray(b64url_decode(signature))
    raw[0] ^= 0x01
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(
            parse_signature(f"{header}..{b64url_encode(bytes(raw))}", require_kid=False),
            payload,
            key,
        )

    other_header = b64url_encode(b'{"alg":"RS256","typ":"JWT"}')
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(
            parse_signature(f"{other_header}..{signature}", require_kid=False), payload, key
        )


# --- our own signer -------------------------------------------------------------------------


def test_own_signature_round_trip(private_key: rsa.RSAPrivateKey) -> None:
    sig = parse_signature(sign(private_key, {"alg": "RS256", "kid": KID, "typ": "JWT"}))
    assert sig.header.kid == KID
    assert sig.header.b64 is True
    verify_signature(sig, BODY, load_public_key(pem_of(private_key)))


def test_unencoded_payload_with_crit_is_accepted(private_key: rsa.RSAPrivateKey) -> None:
    value = sign(private_key, {"alg": "RS256", "kid": KID, "b64": False, "crit": ["b64"]})
    sig = parse_signature(value)
    assert sig.header.b64 is False
    assert sig.header.crit == ("b64",)
    verify_signature(sig, BODY, private_key.public_key())
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(sig, BODY + b" ", private_key.public_key())


def test_unencoded_payload_without_crit_is_rejected(private_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(SignatureError, match="requires crit"):
        parse_signature(sign(private_key, {"alg": "RS256", "kid": KID, "b64": False}))


def test_b64_must_be_boolean() -> None:
    with pytest.raises(SignatureError, match="boolean"):
        parse_signature(header_only(f'{{"alg":"RS256","kid":"{KID}","b64":0,"crit":["b64"]}}'))


def test_alg_none_is_rejected() -> None:
    segment = b64url_encode(f'{{"alg":"none","kid":"{KID}"}}'.encode())
    with pytest.raises(SignatureError, match="not allowed"):
        parse_signature(f"{segment}..")
    with pytest.raises(SignatureError, match="not allowed"):
        parse_signature(f"{segment}..", algorithms={"none", "RS256"})


@pytest.mark.parametrize("allowed", [DEFAULT_ALGORITHMS, frozenset({"RS256", "HS256"})])
def test_hs256_key_confusion_is_rejected(
    private_key: rsa.RSAPrivateKey, allowed: frozenset[str]
) -> None:
    # The classic attack: HMAC with the *public* key's PEM as the shared secret.
    segment = b64url_encode(f'{{"alg":"HS256","kid":"{KID}"}}'.encode())
    mac = hmac.new(pem_of(private_key), f"{segment}.{b64url_encode(BODY)}".encode(), hashlib.sha256)
    with pytest.raises(SignatureError, match="not allowed"):
        parse_signature(f"{segment}..{b64url_encode(mac.digest())}", algorithms=allowed)


@pytest.mark.parametrize(
    ("header_json", "reason"),
    [
        (f'{{"kid":"{KID}"}}', "no alg"),
        (f'{{"alg":256,"kid":"{KID}"}}', "no alg"),
        (f'{{"alg":"RS384","kid":"{KID}"}}', "not allowed"),
        (f'{{"alg":"ES256","kid":"{KID}"}}', "not allowed"),
        (f'{{"alg":"RS256","kid":"{KID}","crit":["exp"],"exp":1}}', "unsupported extension"),
        (f'{{"alg":"RS256","kid":"{KID}","crit":["b64"]}}', "missing header member"),
        (f'{{"alg":"RS256","kid":"{KID}","crit":[]}}', "non-empty list"),
        (f'{{"alg":"RS256","kid":"{KID}","crit":"b64","b64":true}}', "non-empty list"),
        (f'{{"alg":"RS256","kid":"{KID}","alg":"RS256"}}', "duplicate"),
        (f'{{"alg":"RS256","kid":"{KID}","kid":"{KID}"}}', "duplicate"),
        ('{"alg":"RS256"}', "no kid"),
        ('["alg","RS256"]', "not a JSON object"),
        ("{not json", "not valid JSON"),
        (f'{{"alg":"RS256","kid":"{KID}","x":NaN}}', "not valid JSON"),
    ],
)
def test_bad_headers_are_rejected(header_json: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        parse_signature(header_only(header_json))


def test_allow_list_is_configurable(private_key: rsa.RSAPrivateKey) -> None:
    value = sign(private_key, {"alg": "PS256", "kid": KID})
    with pytest.raises(SignatureError, match="not allowed"):
        parse_signature(value)
    sig = parse_signature(value, algorithms={"RS256", "PS256"})
    verify_signature(sig, BODY, private_key.public_key())


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS384", "PS512"])
def test_other_supported_algorithms(private_key: rsa.RSAPrivateKey, alg: str) -> None:
    sig = parse_signature(sign(private_key, {"alg": alg, "kid": KID}), algorithms={alg})
    verify_signature(sig, BODY, private_key.public_key())


@pytest.mark.parametrize(
    "kid",
    [
        "../auth",
        "abc",
        "",
        f"{{{KID}}}",
        f"urn:uuid:{KID}",
        KID.replace("-", ""),
        "6f1c1c4e9-a43-4d3a-8d56-2b6a0f8d7e11",  # a hyphen moved, same length
        f"{KID[:-2]}/x",
        f" {KID[:-1]}",
        7,
        None,
    ],
)
def test_non_uuid_kids_are_rejected(kid: object) -> None:
    with pytest.raises(SignatureError, match="kid"):
        parse_signature(header_only(json.dumps({"alg": "RS256", "kid": kid})))


def test_upper_case_kid_is_accepted_and_kept_as_sent() -> None:
    # Issue 10 item 9: validated as a UUID case-insensitively, but kept exactly as sent (the
    # platform's key endpoint answered 404 for the folded kid).
    assert check_kid(KID.upper()) == KID.upper()
    value = header_only(json.dumps({"alg": "RS256", "kid": KID.upper()}))
    assert parse_signature(value).header.kid == KID.upper()


@pytest.mark.parametrize("value", ["abc", "a.b", "a.b.c.d", ""])
def test_not_compact_is_rejected(value: str) -> None:
    with pytest.raises(SignatureError):
        parse_signature(value)


def test_non_detached_form_is_rejected(private_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = sign(private_key, {"alg": "RS256", "kid": KID}).split(".")
    with pytest.raises(SignatureError, match="not detached"):
        parse_signature(f"{header}.{b64url_encode(BODY)}.{signature}")


@pytest.mark.parametrize("broken", ["=", "+", "/", " ", "!"])
def test_strict_base64url(private_key: rsa.RSAPrivateKey, broken: str) -> None:
    header, _, signature = sign(private_key, {"alg": "RS256", "kid": KID}).split(".")
    with pytest.raises(SignatureError, match="base64url"):
        parse_signature(f"{header}{broken}..{signature}")
    with pytest.raises(SignatureError, match="base64url"):
        parse_signature(f"{header}..{signature}{broken}")


def test_b64url_decode_is_strict() -> None:
    assert b64url_decode(b64url_encode(b"\xfb\xff")) == b"\xfb\xff"
    for text in ["QQ==", "Q", "QR", "a+b/", "+/8"]:
        with pytest.raises(ValueError, match="base64url"):
            b64url_decode(text)


def test_empty_signature_and_oversized_header_are_rejected() -> None:
    with pytest.raises(SignatureError, match="empty"):
        parse_signature(header_only(f'{{"alg":"RS256","kid":"{KID}"}}', b""))
    with pytest.raises(SignatureError, match="too long"):
        parse_signature("e" * 9000 + "..AAAA")


def test_keys_in_the_header_are_ignored(
    private_key: rsa.RSAPrivateKey, attacker_key: rsa.RSAPrivateKey
) -> None:
    numbers = attacker_key.public_key().public_numbers()
    attacker_jwk = {
        "kty": "RSA",
        "n": b64url_encode(numbers.n.to_bytes(256, "big")),
        "e": b64url_encode(numbers.e.to_bytes(3, "big")),
    }
    header = {
        "alg": "RS256",
        "kid": KID,
        "jwk": attacker_jwk,
        "jku": "https://attacker.example/keys",
        "x5u": "https://attacker.example/cert",
    }
    sig = parse_signature(sign(attacker_key, header))
    verify_signature(sig, BODY, load_public_key(attacker_jwk))  # the forgery is self-consistent
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(sig, BODY, private_key.public_key())


def test_short_rsa_key_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    with pytest.raises(SignatureError, match="too short"):
        load_public_key(pem_of(small))


def test_ec_key_is_refused() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SignatureError, match="not an RSA"):
        load_public_key(ec_pem)
    with pytest.raises(SignatureError, match="not an RSA"):
        load_public_key({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})


@pytest.mark.parametrize(
    "material",
    [
        "not a key",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        {"kty": "RSA", "n": "AQAB"},
        {"kty": "RSA", "n": "AQAB=", "e": "AQAB"},
        {**VECTOR["public_jwk"], "d": "AQAB"},
    ],
)
def test_bad_key_material_is_refused(material: Any) -> None:
    with pytest.raises(SignatureError):
        load_public_key(material)


def test_body_must_be_bytes(private_key: rsa.RSAPrivateKey) -> None:
    sig = parse_signature(sign(private_key, {"alg": "RS256", "kid": KID}))
    with pytest.raises(TypeError):
        verify_signature(sig, BODY.decode(), private_key.public_key())  # type: ignore[arg-type]
