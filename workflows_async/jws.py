"""Pure verification of the detached compact JWS in a webhook's ``JWS-SIGNATURE`` header.

Invariants: nothing here does I/O, reads a clock or touches an event loop. A header is refused
(``SignatureError``) before any key is looked up unless its ``alg`` is allow-listed, its ``crit``
is understood and its ``kid`` is a UUID (kept as sent); keys never come from the header (``jwk``,
``jku``, ``x5u``, ``x5c`` are ignored), only RSA keys of at least 2048 bits verify anything.

Signing input (RFC 7515 appendix F, RFC 7797): ``header_segment + "." + b64url(body)``, or
``header_segment + "." + body`` when the header says ``"b64": false`` (and lists it in ``crit``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .errors import SignatureError

__all__ = [
    "DEFAULT_ALGORITHMS",
    "MAX_SIGNATURE_HEADER_LENGTH",
    "MIN_RSA_KEY_BITS",
    "SUPPORTED_ALGORITHMS",
    "DetachedSignature",
    "ProtectedHeader",
    "b64url_decode",
    "b64url_encode",
    "check_kid",
    "load_public_key",
    "parse_signature",
    "signing_input",
    "verify_signature",
]

DEFAULT_ALGORITHMS: frozenset[str] = frozenset({"RS256"})
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset(
    prefix + bits for prefix in ("RS", "PS") for bits in _HASHES
)
MAX_SIGNATURE_HEADER_LENGTH = 8192
MIN_RSA_KEY_BITS = 2048
_UNDERSTOOD_CRIT = frozenset({"b64"})
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_B64URL_VALUE = {
    ord(c): i
    for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}


@dataclass(frozen=True, slots=True)
class ProtectedHeader:
    """The decoded JWS protected header: only the members this library acts on.

    ``kid`` is the UUID exactly as sent (or ``None`` when not required and absent);
    ``encoded`` is the header segment exactly as received, which is what was signed.
    """

    alg: str
    kid: str | None
    b64: bool
    encoded: str
    crit: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DetachedSignature:
    """A parsed ``<header>..<signature>`` value."""

    header: ProtectedHeader
    signature: bytes


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url decode: url-safe alphabet only, no padding, canonical trailing bits.

    Raises ``ValueError`` for anything else.
    """
    tail = len(text) % 4
    if tail == 1:
        raise ValueError("not base64url")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("not base64url") from None
    # To the standard alphabet, with "+", "/" and "=" made invalid, padded: the strict C
    # decoder then refuses every character outside the url-safe alphabet.
    std = raw.translate(_TO_STANDARD)
    if tail:
        std += b"==" if tail == 2 else b"="
    try:
        data = binascii.a2b_base64(std, strict_mode=True)
    except binascii.Error:
        raise ValueError("not base64url") from None
    # Canonical: the bits of the last character that encode nothing are zero (4 of them after
    # 2 characters of a group, 2 after 3), so the text is the only encoding of the data.
    if tail and _B64URL_VALUE[raw[-1]] & (0x0F if tail == 2 else 0x03):
        raise ValueError("not canonical base64url")
    return data


def check_kid(kid: object) -> str:
    """Return ``kid`` exactly as given when it is a UUID in canonical 8-4-4-4-12 form, or raise
    ``SignatureError``.

    The check is case-insensitive (upper-case hex digits pass), but the kid is not folded: the
    platform's key endpoint looks kids up exactly as issued, so ``ABC...`` is fetched and
    cached as ``ABC...``. Braces, ``urn:uuid:``, missing hyphens and anything else are refused.
    """
    if not isinstance(kid, str) or len(kid) != 36:
        raise SignatureError("kid is not a UUID")
    try:
        canonical = str(uuid.UUID(kid))
    except ValueError:
        raise SignatureError("kid is not a UUID") from None
    if canonical != kid.lower():
        raise SignatureError("kid is not a UUID")
    return kid


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise SignatureError("duplicate header member")
        result[name] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise SignatureError("header is not valid JSON")


def _decode_header(segment: str) -> dict[str, Any]:
    try:
        raw = b64url_decode(segment)
    except ValueError:
        raise SignatureError("header is not base64url") from None
    try:
        members = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError):
        raise SignatureError("header is not valid JSON") from None
    if not isinstance(members, dict):
        raise SignatureError("header is not a JSON object")
    return members


def _check_crit(members: Mapping[str, Any]) -> tuple[str, ...]:
    if "crit" not in members:
        return ()
    crit = members["crit"]
    if not isinstance(crit, list) or not crit or not all(isinstance(c, str) for c in crit):
        raise SignatureError("crit must be a non-empty list of strings")
    if len(set(crit)) != len(crit):
        raise SignatureError("crit lists a name twice")
    if not set(crit) <= _UNDERSTOOD_CRIT:
        raise SignatureError("crit lists an unsupported extension")
    if any(name not in members for name in crit):
        raise SignatureError("crit names a missing header member")
    return tuple(crit)


def parse_signature(
    value: str,
    *,
    algorithms: Collection[str] = DEFAULT_ALGORITHMS,
    require_kid: bool = True,
) -> DetachedSignature:
    """Parse a detached compact JWS; every refusal is a ``SignatureError`` with a short reason.

    Only algorithms both in ``algorithms`` and in ``SUPPORTED_ALGORITHMS`` are accepted, so
    ``none`` and HMAC algorithms can never pass, whatever the caller allows.
    """
    if isinstance(algorithms, str):
        raise TypeError("algorithms must be a collection of names, not one string")
    if len(value) > MAX_SIGNATURE_HEADER_LENGTH:
        raise SignatureError("signature header too long")
    parts = value.split(".")
    if len(parts) != 3:
        raise SignatureError("signature is not a compact JWS")
    segment, payload, encoded_signature = parts
    if payload:
        raise SignatureError("signature is not detached")
    header = _parse_header(segment, frozenset(algorithms), require_kid)
    try:
        signature = b64url_decode(encoded_signature)
    except ValueError:
        raise SignatureError("signature is not base64url") from None
    if not signature:
        raise SignatureError("signature is empty")
    return DetachedSignature(header=header, signature=signature)


@functools.lru_cache(maxsize=64)
def _parse_header(segment: str, algorithms: frozenset[str], require_kid: bool) -> ProtectedHeader:
    """Decode and check the protected header segment.

    Pure, hence cached: a signer sends the same segment with every webhook, and decoding it
    (base64url, JSON, UUID) was a third of the cost of a verification. A refusal raises and
    is never cached, so every bad header is checked in full each time.
    """
    members = _decode_header(segment)
    alg = members.get("alg")
    if not isinstance(alg, str):
        raise SignatureError("header has no alg")
    if alg not in algorithms or alg not in SUPPORTED_ALGORITHMS:
        raise SignatureError("algorithm not allowed")
    crit = _check_crit(members)
    b64 = members.get("b64", True)
    if not isinstance(b64, bool):
        raise SignatureError("b64 must be a boolean")
    if not b64 and "b64" not in crit:
        raise SignatureError("b64 false requires crit")
    kid: str | None = None
    if "kid" in members:
        kid = check_kid(members["kid"])
    elif require_kid:
        raise SignatureError("header has no kid")
    return ProtectedHeader(alg=alg, kid=kid, b64=b64, encoded=segment, crit=crit)


def signing_input(header: ProtectedHeader, body: bytes) -> bytes:
    """The bytes that were signed: the header segment, a dot, then the (encoded) raw body."""
    if not isinstance(body, bytes):
        raise TypeError("the body must be the raw request bytes")
    if header.b64:  # base64url without padding, by the C encoder directly
        body = binascii.b2a_base64(body, newline=False).translate(_TO_URLSAFE).rstrip(b"=")
    return header.encoded.encode("ascii") + b"." + body


def _check_key(key: object) -> RSAPublicKey:
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("signing key is not an RSA public key")
    if key.key_size < MIN_RSA_KEY_BITS:
        raise SignatureError("signing key is too short")
    return key


def _scheme(alg: str) -> tuple[padding.AsymmetricPadding, hashes.HashAlgorithm]:
    digest = _HASHES[alg[2:]]()
    if alg.startswith("PS"):
        # RFC 7518 section 3.5: MGF1 with the same hash, salt as long as the digest.
        return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size), digest
    return padding.PKCS1v15(), digest


# Padding and hash objects hold no state: one pair per algorithm serves every verification.
_SCHEMES = {alg: _scheme(alg) for alg in SUPPORTED_ALGORITHMS}


def verify_signature(sig: DetachedSignature, body: bytes, key: RSAPublicKey) -> None:
    """Check ``sig`` over the raw ``body`` with ``key``; ``SignatureError`` if it does not hold."""
    _verify_checked(sig, body, _check_key(key))


def _verify_checked(sig: DetachedSignature, body: bytes, key: RSAPublicKey) -> None:
    """:func:`verify_signature` with a key that passed :func:`load_public_key` (an RSA public
    key of at least ``MIN_RSA_KEY_BITS``), which is not checked again: a key store's."""
    scheme = _SCHEMES.get(sig.header.alg)
    if scheme is None:
        raise SignatureError("algorithm not allowed")
    try:
        key.verify(sig.signature, signing_input(sig.header, body), *scheme)
    except InvalidSignature:
        raise SignatureError("signature does not match") from None


def _jwk_int(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise SignatureError(f"JWK member {name} missing")
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except ValueError:
        raise SignatureError(f"JWK member {name} is not base64url") from None


def _load_jwk(jwk: Mapping[str, Any]) -> RSAPublicKey:
    if jwk.get("kty") != "RSA":
        raise SignatureError("JWK is not an RSA key")
    if any(name in jwk for name in ("d", "p", "q", "dp", "dq", "qi")):
        raise SignatureError("JWK holds private key material; give the public key only")
    numbers = rsa.RSAPublicNumbers(e=_jwk_int(jwk, "e"), n=_jwk_int(jwk, "n"))
    try:
        return numbers.public_key()
    except ValueError:
        raise SignatureError("JWK is not a valid RSA key") from None


def load_public_key(material: str | bytes | Mapping[str, Any]) -> RSAPublicKey:
    """Load an RSA public key from PEM text/bytes or an RSA JWK mapping (``kty``, ``n``, ``e``).

    Raises ``SignatureError`` for unacceptable material: unparsable, not RSA, under 2048 bits
    (callers that load configuration map it to ``ConfigurationError``).
    """
    if isinstance(material, Mapping):
        return _check_key(_load_jwk(material))
    data = material.encode("ascii", "replace") if isinstance(material, str) else material
    try:
        key = serialization.load_pem_public_key(data.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError("key is not a PEM public key") from None
    return _check_key(key)
