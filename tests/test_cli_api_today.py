"""The CLI with today's API: ``--token tot_...``, ``--api-version 2 --record-id``, ``execute``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from test_cli import ERROR, SimThread, cli, one_error_line

from workflows_async.testing import WorkflowDefinition


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    server = SimThread()
    server.call(lambda: server.sim.define("kyc-ui", WorkflowDefinition(execution_type="UI")))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def no_workflows_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WORKFLOWS_"):
            monkeypatch.delenv(name)


def api(sim: SimThread, token: str | None = None) -> list[str]:
    token = token or sim.call(lambda: sim.sim.organization_token())
    return ["--base-url", sim.base_url, "--insecure-http", "--token", token,
            "--poll-initial", "0.05", "--poll-max", "0.1"]  # fmt: skip


def new_record(sim: SimThread) -> str:
    async def create() -> str:
        return sim.sim._tables.create("customers", {"companyName": "Acme"})["id"]  # type: ignore[no-any-return]

    return sim.run(create())


def test_execute_with_an_organization_token(
    sim: SimThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "execute", "--definition", "kyc-basic", "--locale", "en",
                         "--parameters", '{"level": 2}', *api(sim))  # fmt: skip
    assert code == 0, err
    outcome = json.loads(out)
    assert outcome["status"] == "COMPLETED" and outcome["result"]["parameters"] == {"level": 2}


def test_execute_no_wait_shows_the_link_only_when_asked(
    sim: SimThread, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["execute", "--definition", "kyc-ui", "--locale", "sv", "--no-wait", *api(sim)]
    code, out, _ = cli(capsys, *args)
    assert code == 0 and "link" not in json.loads(out) and "token" not in out.lower()
    code, out, _ = cli(capsys, *args, "--show-link")
    shown = json.loads(out)
    assert code == 0 and shown["link"].startswith(sim.base_url) and shown["status"] == "RUNNING"


def test_execute_refuses_an_expiry_out_of_bounds(
    sim: SimThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "execute", "--definition", "kyc-basic", "--locale", "en",
                       "--expires-in", "0.1", *api(sim))  # fmt: skip
    assert code == 2 and "30 minutes" in one_error_line(err)


def test_run_v2_for_a_record(sim: SimThread, capsys: pytest.CaptureFixture[str]) -> None:
    record_id = new_record(sim)
    code, out, err = cli(capsys, "run", "--definition", "kyc-basic", "--api-version", "2",
                         "--record-id", record_id, *api(sim))  # fmt: skip
    assert code == 0, err
    outcome = json.loads(out)
    assert outcome["recordId"] == record_id and outcome["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--record-id", "0c5e2a9b-7d41-4f0e-b2a3-5c6d7e8f9a0b"], "--record-id needs"),
        (["--api-version", "2", "--company-name", "Acme"], "not a case"),
    ],
)
def test_run_refuses_mixing_cases_and_records(
    sim: SimThread, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    before = sim.call(lambda: sum(sim.sim.calls_by_route.values()))
    code, _, err = cli(capsys, "run", "--definition", "kyc-basic", *extra, *api(sim))
    assert code == 2 and message in one_error_line(err)
    assert sim.call(lambda: sum(sim.sim.calls_by_route.values())) == before  # nothing sent


def test_org_token_from_the_environment_and_403_named(
    sim: SimThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = sim.call(lambda: sim.sim.organization_token(["can_view_workspace"]))
    monkeypatch.setenv("WORKFLOWS_ORG_TOKEN", token)
    monkeypatch.setenv("WORKFLOWS_BASE_URL", sim.base_url)
    code, _, err = cli(capsys, "execute", "--definition", "kyc-basic", "--locale", "en",
                       "--insecure-http")  # fmt: skip
    line = one_error_line(err)
    assert code == 1 and line.startswith(ERROR) and "missing permission can_run" in line
    assert token not in err


def test_execute_timeout_names_the_wait_command(
    sim: SimThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "execute", "--definition", "kyc-slow", "--locale", "en",
                         "--timeout", "0.3", *api(sim))  # fmt: skip
    assert code == 4 and out == ""
    line = one_error_line(err)
    execution_id = line.split("workflows-async wait ")[1].strip()
    assert sim.call(lambda: sim.sim.workflows[execution_id].status) == "RUNNING"


def test_token_and_key_flags_together_are_a_usage_error(
    sim: SimThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "wait", "9b2f7d4e-1c3a-4b5d-8e6f-7a8b9c0d1e2f", *api(sim),
                       "--api-key", "k", "--api-secret", "s")  # fmt: skip
    assert code == 2 and "not both" in one_error_line(err)
