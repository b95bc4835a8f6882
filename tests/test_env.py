"""The ``WORKFLOWS_*`` rules (workflows_async/_env.py), and that ``Session.from_env`` and the
``workflows-async`` command follow the same ones."""

from __future__ import annotations

import os

import pytest
from test_lazy import HEAVY, modules_after

import workflows_async as wa
from workflows_async import _env
from workflows_async.cli import build_parser
from workflows_async.cli.common import UsageError, make_session

ORG = "tot_0123456789abcdefSECRET"
BASE = "https://api.example.test"


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({"WORKFLOWS_ORG_TOKEN": ORG}, "organization_token"),
        ({"WORKFLOWS_TOKEN": f" {ORG} "}, "organization_token"),
        ({"WORKFLOWS_ORG_TOKEN": ORG, "WORKFLOWS_TOKEN": ORG}, "organization_token"),
        ({"WORKFLOWS_ORG_TOKEN": ORG, "WORKFLOWS_TOKEN": "a.jwt"}, "organization_token"),
        ({"WORKFLOWS_TOKEN": ORG, "WORKFLOWS_API_KEY": "k", "WORKFLOWS_API_SECRET": "s"},
         "organization_token"),
        ({"WORKFLOWS_TOKEN": "a.jwt", "WORKFLOWS_API_KEY": "k", "WORKFLOWS_API_SECRET": "s"},
         "key_secret"),
        ({"WORKFLOWS_TOKEN": "a.jwt"}, "token"),
    ],
)  # fmt: skip
def test_the_credential_rule(env: dict[str, str], kind: str) -> None:
    found = _env.credentials(env)
    assert found is not None and found.kind == kind


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WORKFLOWS_TOKEN": "  "},
        {"WORKFLOWS_ORG_TOKEN": "", "WORKFLOWS_TOKEN": ""},
        {"WORKFLOWS_API_KEY": "k"},
        {"WORKFLOWS_API_SECRET": "s"},
    ],
)
def test_no_credential(env: dict[str, str]) -> None:
    assert _env.credentials(env) is None
    with pytest.raises(wa.ConfigurationError) as caught:
        _env.require_credentials(env)
    half = "WORKFLOWS_API_KEY" in env or "WORKFLOWS_API_SECRET" in env
    assert str(caught.value).startswith("set both" if half else "no credentials")


def test_values_never_show() -> None:
    found = _env.credentials({"WORKFLOWS_API_KEY": "the-key", "WORKFLOWS_API_SECRET": "the-pw"})
    assert found is not None
    assert "the-key" not in repr(found) and "the-pw" not in repr(found)
    with pytest.raises(wa.ConfigurationError) as caught:
        _env.credentials({"WORKFLOWS_ORG_TOKEN": ORG, "WORKFLOWS_TOKEN": "tot_other"})
    assert "SECRET" not in str(caught.value) and "tot_other" not in str(caught.value)


@pytest.mark.parametrize(("text", "version"), [("", None), ("1", 1), ("2", 2), ("12", 12)])
def test_api_version(text: str, version: int | None) -> None:
    assert _env.api_version({"WORKFLOWS_API_VERSION": text} if text else {}) == version


@pytest.mark.parametrize("text", ["two", "0", "00", "-1", "1.5", " 2", "²", "\u0661"])
def test_a_bad_api_version_names_the_variable(text: str) -> None:
    """Failed before _env: "²" passed str.isdigit, then int() raised ValueError out of
    Session.from_env; "0" was refused as "api_version", a name the user never set; an
    Arabic-Indic digit was taken as a version."""
    env = {"WORKFLOWS_BASE_URL": BASE, "WORKFLOWS_TOKEN": "t", "WORKFLOWS_API_VERSION": text}
    with pytest.raises(wa.ConfigurationError, match=r"^WORKFLOWS_API_VERSION must be"):
        wa.Session.from_env(env)


def test_an_explicit_api_version_wins_over_a_bad_variable() -> None:
    env = {"WORKFLOWS_BASE_URL": BASE, "WORKFLOWS_TOKEN": "t", "WORKFLOWS_API_VERSION": "x"}
    assert wa.Session.from_env(env, api_version=2).api_version == 2


def test_the_rules_load_nothing_heavy() -> None:
    assert not HEAVY & modules_after("import workflows_async._env")


def _cli_finds_credentials(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> bool:
    monkeypatch.setenv("WORKFLOWS_BASE_URL", BASE)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["status", "some-id"])
    try:
        make_session(args)
    except UsageError as exc:
        refused = str(exc)
    else:
        return True
    assert refused.startswith("no credentials: pass --token")
    return False


def _from_env_finds_credentials(env: dict[str, str]) -> bool:
    try:
        wa.Session.from_env({"WORKFLOWS_BASE_URL": BASE, **env})
    except wa.ConfigurationError:
        return False
    return True


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WORKFLOWS_ORG_TOKEN": ORG},
        {"WORKFLOWS_TOKEN": ORG},
        {"WORKFLOWS_TOKEN": "a.jwt"},
        {"WORKFLOWS_API_KEY": "k", "WORKFLOWS_API_SECRET": "s"},
        {"WORKFLOWS_API_KEY": "k"},
        {"WORKFLOWS_TOKEN": "  "},
        {"WORKFLOWS_ORG_TOKEN": " ", "WORKFLOWS_API_SECRET": "s"},
    ],
)
def test_the_command_and_from_env_agree_on_credentials(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """Failed before _env for a blank WORKFLOWS_TOKEN: the command counted it as a credential
    and Session.from_env did not, so the command failed with from_env's message (which names
    no flag) instead of its own, and ``listen`` could not start without credentials."""
    for name in [name for name in os.environ if name.startswith("WORKFLOWS_")]:
        monkeypatch.delenv(name)
    assert _cli_finds_credentials(monkeypatch, env) == _from_env_finds_credentials(env)
