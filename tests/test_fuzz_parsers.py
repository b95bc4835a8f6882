"""Property-based fuzzing (Hypothesis) of the two parsers that see hostile input first: the
JWS-SIGNATURE header parser and the webhook body parser (issue 10, item 12).

Properties: they raise nothing but their own typed error (``SignatureError``,
``BadEventError``) whatever they are given; the JWS parser accepts a header only when an
independent oracle says every rule holds; an event's id and status come from one object."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows_async.errors import SignatureError
from workflows_async.events import BadEventError, parse_event
from workflows_async.jws import (
    SUPPORTED_ALGORITHMS,
    b64url_decode,
    b64url_encode,
    check_kid,
    parse_signature,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the JWS header parser ----------------------------------------------------------------

ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "none", "HS256", "ES256", "rs256"]
KIDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: u.hex),
    st.text(max_size=40),
    st.integers(),
    st.none(),
)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10))
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.one_of(st.sampled_from(ALGS), JSON_SCALARS),
        "kid": KIDS,
        "typ": st.just("JWT"),
        "b64": st.one_of(st.booleans(), JSON_SCALARS),
        "crit": st.one_of(
            st.lists(st.sampled_from(["b64", "exp", "kid", ""]), max_size=3), JSON_SCALARS
        ),
        "jwk": st.just({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        "x5u": st.just("https://attacker.example/key"),
    },
)

NEAR_VALID = st.fixed_dictionaries(
    {"alg": st.sampled_from(ALGS), "kid": st.one_of(st.uuids().map(str), KIDS)},
    optional={
        "typ": st.just("JWT"),
        "b64": st.booleans(),
        "crit": st.sampled_from([["b64"], ["b64", "b64"], [], "b64", ["exp"]]),
    },
)


def oracle(header: dict[str, Any], allowed: frozenset[str]) -> bool:
    """Should this header be accepted? Written from the rules, not from the parser."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed or alg not in SUPPORTED_ALGORITHMS:
        return False
    kid = header.get("kid")
    if not isinstance(kid, str) or len(kid) != 36:
        return False
    try:
        if str(uuid.UUID(kid)) != kid.lower():
            return False
    except ValueError:
        return False
    crit = header.get("crit")
    if "crit" in header:
        if not isinstance(crit, list) or not crit or len(set(crit)) != len(crit):
            return False
        if not all(c == "b64" for c in crit) or "b64" not in header:
            return False
    b64 = header.get("b64", True)
    if not isinstance(b64, bool):
        return False
    return b64 or (isinstance(crit, list) and "b64" in crit)


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_parsed_or_refused_with_a_signature_error(value: str) -> None:
    with contextlib.suppress(SignatureError):
        parse_signature(value)


@FUZZ
@given(st.binary(max_size=200), st.binary(max_size=300))
def test_any_header_bytes_are_parsed_or_refused(header: bytes, signature: bytes) -> None:
    value = f"{b64url_encode(header)}..{b64url_encode(signature)}"
    try:
        sig = parse_signature(value, algorithms=SUPPORTED_ALGORITHMS)
    except SignatureError:
        return
    decoded = json.loads(header)
    assert oracle(decoded, SUPPORTED_ALGORITHMS)
    assert sig.signature == signature


@FUZZ
@given(
    st.one_of(HEADERS, NEAR_VALID),
    st.frozensets(st.sampled_from(ALGS), min_size=1),
    st.binary(min_size=0, max_size=300),
)
def test_a_header_is_accepted_exactly_when_every_rule_holds(
    header: dict[str, Any], allowed: frozenset[str], signature: bytes
) -> None:
    value = f"{b64url_encode(json.dumps(header).encode())}..{b64url_encode(signature)}"
    try:
        sig = parse_signature(value, algorithms=allowed)
    except SignatureError:
        assert not (oracle(header, allowed) and signature)
        return
    assert oracle(header, allowed) and signature
    assert sig.header.alg in SUPPORTED_ALGORITHMS and sig.header.alg not in ("none", "HS256")
    assert sig.header.kid == header["kid"]  # kept exactly as sent
    assert check_kid(sig.header.kid) == header["kid"]


@FUZZ
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/."))
def test_b64url_decode_raises_only_value_error(text: str) -> None:
    try:
        data = b64url_decode(text)
    except ValueError:
        return
    assert b64url_encode(data) == text


# -- the webhook body parser ----------------------------------------------------------------

JSON_VALUES = st.recursive(
    JSON_SCALARS | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["workflowId", "workflow_id", "id", "status", "workflowStatus", "caseId", "x"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
IDS = st.one_of(st.text(max_size=6), st.integers(), st.none(), st.booleans())
OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "workflowId": IDS,
        "id": IDS,
        "status": IDS,
        "workflowStatus": IDS,
        "caseId": IDS,
        "eventId": IDS,
    },
)
BODIES = st.fixed_dictionaries(
    {},
    optional={
        "workflowId": IDS,
        "id": IDS,
        "status": IDS,
        "caseId": IDS,
        "eventId": IDS,
        "workflow": st.one_of(OBJECTS, JSON_VALUES),
        "data": st.one_of(OBJECTS, JSON_VALUES),
    },
)


def text_of(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 256:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_are_an_event_or_a_bad_event_error(raw: bytes) -> None:
    with contextlib.suppress(BadEventError):
        parse_event(raw)


@FUZZ
@given(JSON_VALUES)
def test_any_json_is_an_event_or_a_bad_event_error(value: Any) -> None:
    with contextlib.suppress(BadEventError):
        parse_event(json.dumps(value).encode())


@FUZZ
@given(BODIES)
def test_id_and_status_always_come_from_one_object(body: dict[str, Any]) -> None:
    try:
        event = parse_event(json.dumps(body).encode())
    except BadEventError:
        return
    objects = [body] + [o for o in (body.get("workflow"), body.get("data")) if isinstance(o, dict)]
    assert any(
        event.workflow_id in {text_of(o.get(name)) for name in ("workflowId", "workflow_id", "id")}
        and event.status in {text_of(o.get(name)) for name in ("status", "workflowStatus")}
        for o in objects
    ), body


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("opener", [b"[", b'{"a":', b'{"workflow":'])
def test_deep_nesting_is_a_bad_event(depth: int, opener: bytes) -> None:
    with pytest.raises(BadEventError):
        parse_event(opener * depth)
