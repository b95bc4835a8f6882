"""WebhookSettings: the Session's webhook options as one frozen object, and the older
keywords that still map onto it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

import workflows_async as wa
from workflows_async.testing import (
    Simulator,
    generate_signing_key,
    public_key_pem,
    sign_webhook,
)

REMOTE = "https://api.example.test"
LOCAL = "http://127.0.0.1:8080"
KID = "0b7e3a52-3c1f-4f0e-9d8a-5e2f6c1a9b47"
KEY = generate_signing_key()


def delivery(workflow_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"workflowId": workflow_id, "status": "COMPLETED"}).encode()
    return body, {"JWS-SIGNATURE": sign_webhook(body, KEY, KID)}


def test_the_simple_call_still_works() -> None:
    session = wa.Session(REMOTE, wa.OrganizationTokenAuth("tot_x"))
    assert session._webhooks == wa.WebhookSettings()


async def test_settings_pin_keys_and_bound_the_body() -> None:
    settings = wa.WebhookSettings(keys={KID: public_key_pem(KEY)}, max_body=256)
    async with wa.Session(REMOTE, webhooks=settings) as session:
        core = session.webhook_core()
        body, headers = delivery("wf-1")
        assert (await core.receive("POST", headers, body)).status == 200
        forged = body.replace(b"COMPLETED", b"FAILED")
        assert (await core.receive("POST", headers, forged)).status == 401
        big = json.dumps({"workflowId": "wf-2", "status": "X", "pad": "x" * 300}).encode()
        big_headers = {"JWS-SIGNATURE": sign_webhook(big, KEY, KID)}
        assert (await core.receive("POST", big_headers, big)).status == 413


@pytest.mark.parametrize(
    ("keyword", "value", "field"),
    [
        ("verify_webhooks", False, "verify"),
        ("force_unverified", True, "force_unverified"),
        ("webhook_keys", {KID: public_key_pem(KEY)}, "keys"),
        ("fetch_webhook_keys", True, "fetch_keys"),
        ("webhook_algorithms", ["RS256", "PS256"], "algorithms"),
        ("max_webhook_body", 4096, "max_body"),
        ("lost_webhook_grace", 2.5, "lost_grace"),
    ],
)
def test_each_older_keyword_maps_onto_its_field(keyword: str, value: Any, field: str) -> None:
    options: dict[str, Any] = {keyword: value}
    session = wa.Session(LOCAL, allow_insecure_http=True, **options)
    assert session._webhooks == wa.WebhookSettings(**{field: value})


def test_settings_and_an_older_keyword_together_are_refused() -> None:
    with pytest.raises(wa.ConfigurationError, match="not both"):
        wa.Session(REMOTE, webhooks=wa.WebhookSettings(), max_webhook_body=10)


def test_an_unknown_keyword_is_still_a_type_error_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"'verify_webhook' \(did you mean 'verify_webhooks'\?\)"):
        wa.Session(REMOTE, verify_webhook=False)  # type: ignore[call-arg]


def test_unverified_webhooks_are_refused_for_a_remote_api_either_way() -> None:
    with pytest.raises(wa.ConfigurationError, match="local"):
        wa.Session(REMOTE, webhooks=wa.WebhookSettings(verify=False))
    wa.Session(REMOTE, webhooks=wa.WebhookSettings(verify=False, force_unverified=True))
    wa.Session(LOCAL, allow_insecure_http=True, verify_webhooks=False)


def test_from_env_takes_either_spelling() -> None:
    env = {"WORKFLOWS_BASE_URL": REMOTE, "WORKFLOWS_ORG_TOKEN": "tot_x"}
    settings = wa.WebhookSettings(max_body=1000)
    assert wa.Session.from_env(env, webhooks=settings)._webhooks == settings
    assert wa.Session.from_env(env, max_webhook_body=1000)._webhooks == settings


def test_settings_are_frozen_and_keep_their_own_copies() -> None:
    keys = {KID: public_key_pem(KEY)}
    algorithms = ["RS256"]
    settings = wa.WebhookSettings(keys=keys, algorithms=algorithms)
    keys.clear()
    algorithms.append("PS256")
    assert settings.keys is not None and list(settings.keys) == [KID]
    assert settings.algorithms == frozenset({"RS256"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_body = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.keys[KID] = "other"  # type: ignore[index]


@pytest.mark.parametrize(
    "bad",
    [
        {"max_body": 0},
        {"max_body": True},
        {"max_body": 1.5},
        {"lost_grace": -1},
        {"algorithms": "RS256"},
    ],
)
def test_bad_settings_are_refused_where_they_are_written(bad: dict[str, Any]) -> None:
    with pytest.raises(wa.ConfigurationError):
        wa.WebhookSettings(**bad)


def test_settings_must_be_a_webhook_settings() -> None:
    with pytest.raises(wa.ConfigurationError, match="WebhookSettings"):
        wa.Session(REMOTE, webhooks={"verify": False})  # type: ignore[arg-type]


@pytest.mark.workflows_session(webhooks=wa.WebhookSettings(max_body=4096), api_version=2)
async def test_the_session_marker_passes_settings_and_still_serves_webhooks(
    workflows_session: wa.Session, workflows_simulator: Simulator
) -> None:
    assert workflows_session._webhooks.max_body == 4096
    assert len(workflows_simulator.webhook_urls) == 1
    outcome = await workflows_session.run_and_wait(workflow_definition_id="kyc-basic", timeout=10)
    assert outcome.workflow.status == "COMPLETED"
