"""Webhook signatures as the Workflows platform makes them: RS256, compact detached JWS.

Invariants: the signing input is built from the exact body bytes handed in, never from
re-serialised JSON; a kid issued by a `KeyRing` keeps resolving to the same public key for the
ring's whole life (rotation only adds keys); only the ring's current key signs, possibly before
it is published (`published` turns true ``publish_delay`` seconds after the rotation, for good).

With ``b64=True`` (the default, RFC 7515 appendix F) the signing input is
``b64url(header) + "." + b64url(body)``; with ``b64=False`` (RFC 7797) the header also carries
``"b64": false, "crit": ["b64"]`` and the signing input is ``b64url(header) + "." + body``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["KeyRing", "generate_signing_key", "public_key_pem", "sign_webhook"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_signing_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit RSA key (public exponent 65537), fit for RS256."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_key_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """The PEM ``SubjectPublicKeyInfo`` ("BEGIN PUBLIC KEY") text of ``key``'s public half."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def sign_webhook(body: bytes, private_key: rsa.RSAPrivateKey, kid: str, *, b64: bool = True) -> str:
    """The value of a ``JWS-SIGNATURE`` header for ``body``: ``<header>..<signature>``.

    ``body`` is the exact byte string that will be sent; the payload part of the compact JWS is
    left empty (detached content), the receiver puts the body back in to verify.
    """
    header: dict[str, object] = {"alg": "RS256", "kid": kid, "typ": "JWT"}
    if not b64:
        header["b64"] = False
        header["crit"] = ["b64"]
    encoded_header = _b64url(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    payload = _b64url(body).encode("ascii") if b64 else body
    signing_input = encoded_header.encode("ascii") + b"." + payload
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{encoded_header}..{_b64url(signature)}"


class KeyRing:
    """Every signing key a simulator has used, by kid; the newest one signs.

    >>> ring = KeyRing()
    >>> old = ring.kid
    >>> new = ring.rotate()
    >>> old != new and ring.pem(old) is not None
    True
    """

    def __init__(
        self,
        key: rsa.RSAPrivateKey | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        self._pems: dict[str, str] = {}
        self._publish_at: dict[str, float] = {}  # only kids not known to be published yet
        self._clock = clock
        self._kid = ""
        self.rotate(key)

    @property
    def kid(self) -> str:
        """The kid (a uuid4 string) of the key that signs now."""
        return self._kid

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        """The key that signs now."""
        return self._keys[self._kid]

    def rotate(self, key: rsa.RSAPrivateKey | None = None, *, publish_delay: float = 0.0) -> str:
        """Make ``key`` (or a freshly generated one) the signer under a new kid; return the kid.

        With ``publish_delay`` seconds, the kid signs at once but is `published` only later.
        """
        kid = str(uuid.uuid4())
        self._keys[kid] = key if key is not None else generate_signing_key()
        if publish_delay > 0:
            self._publish_at[kid] = self._clock() + publish_delay
        self._kid = kid
        return kid

    def publish(self, kid: str) -> None:
        """End ``kid``'s publish delay now (KeyError for a kid never issued)."""
        if kid not in self._keys:
            raise KeyError(kid)
        self._publish_at.pop(kid, None)

    def published(self, kid: str) -> bool:
        """The key endpoint serves ``kid`` now (issued, and its publish delay is over)."""
        if kid not in self._keys:
            return False
        due = self._publish_at.get(kid)
        if due is None:
            return True
        if self._clock() < due:
            return False
        del self._publish_at[kid]
        return True

    def pem(self, kid: str) -> str | None:
        """The public key PEM for ``kid``, or None when this ring never issued that kid."""
        key = self._keys.get(kid)
        if key is None:
            return None
        pem = self._pems.get(kid)
        if pem is None:
            pem = self._pems[kid] = public_key_pem(key)
        return pem

    def sign(self, body: bytes, *, b64: bool = True) -> str:
        """Sign ``body`` with the current key under the current kid."""
        return sign_webhook(body, self.private_key, self._kid, b64=b64)
