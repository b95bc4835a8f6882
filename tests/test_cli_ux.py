"""What the CLI tells a user, through the real entry point (a child process) and the Simulator:
batch exit codes, counts, progress, refusal of duplicate keys, Ctrl-C summaries, the JSON
summary, errors that say what to do, ``simulate --json`` and ``sim-control``."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_api import closed_port
from test_cli import FAST, ROOT, Child, SimThread, read_jsonl

from workflows_async.cli import build_parser
from workflows_async.cli.progress import Counts, duration, progress_line

SCRIPT = Path(sys.executable).with_name("workflows-async")
ENTRY = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "workflows_async"]
ERROR = "workflows-async: error:"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    server = SimThread()
    try:
        yield server
    finally:
        server.close()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWS_")}
    return {**env, **extra}


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: S603
        [*ENTRY, *argv], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env=env or clean_env(), check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR), err
    return lines[0]


def api(sim: SimThread) -> list[str]:
    return [
        "--base-url", sim.base_url, "--api-key", "test-key", "--api-secret", "test-secret",
        "--insecure-http",
    ]  # fmt: skip


def workflow_count(sim: SimThread) -> int:
    return sim.call(lambda: len(sim.sim.workflows))


# -- batch --------------------------------------------------------------------------------------


def test_batch_failure_status_exits_3_api_errors_apart_and_json_summary(
    sim: SimThread, tmp_path: Path
) -> None:
    cases, output = tmp_path / "cases.csv", tmp_path / "out.jsonl"
    cases.write_text(
        "externalId,companyName,definition\n"
        "ok-1,A,\n"  # --definition
        "bad-1,B,kyc-failing\n"  # the row's own definition: a failure status
        "err-1,C,no-such-definition\n"  # an API error (404), not a failure status
    )
    done = run("batch", str(cases), "--definition", "kyc-basic", "--output", str(output),
               "--json", *api(sim), *FAST)  # fmt: skip
    assert done.returncode == 3, done.stderr  # the README: 3 for a failure status
    summary = json.loads(done.stdout)
    assert (summary["completed"], summary["failed"], summary["apiErrors"]) == (1, 1, 1)
    assert [row["caseKey"] for row in summary["failedRows"]] == ["bad-1"]
    assert summary["failedRows"][0]["status"] == "FAILED"
    [api_error] = summary["apiErrorRows"]
    assert (
        api_error["caseKey"] == "err-1"
        and "answered 404 definition_not_found" in api_error["error"]
    )
    assert summary["output"] == str(output) and summary["interrupted"] is False
    assert "\r" not in done.stderr  # no progress line into a pipe
    assert "1 completed, 1 failed, 1 API errors (rerun to retry)" in done.stderr
    finished = {r["caseKey"]: r for r in read_jsonl(output) if r["event"] == "finished"}
    assert finished["bad-1"]["definition"] == "kyc-failing"
    assert finished["ok-1"]["definition"] == "kyc-basic"
    started = {r["caseKey"] for r in read_jsonl(output) if r["event"] == "started"}
    assert started == {"ok-1", "bad-1"}  # the 404 never started a workflow


def test_batch_api_errors_only_exit_1(sim: SimThread, tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "e-1", "companyName": "A", "definition": "nope"}\n')
    done = run("batch", str(cases), "--output", str(tmp_path / "o.jsonl"), *api(sim), *FAST)
    assert done.returncode == 1, done.stderr
    assert "0 failed, 1 API errors" in done.stderr


def test_batch_refuses_a_duplicate_key_before_sending_anything(
    sim: SimThread, tmp_path: Path
) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text("externalId,companyName\na1,A\na2,B\na1,C\n")
    before = workflow_count(sim)
    done = run("batch", str(cases), "--definition", "kyc-basic", *api(sim))
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "'a1'" in line and "lines 2, 4" in line
    assert workflow_count(sim) == before


def test_batch_needs_a_definition_from_the_flag_or_the_row(tmp_path: Path) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text("companyName\nA\n")
    done = run("batch", str(cases), "--base-url", "http://127.0.0.1:9", "--token", "t")
    assert done.returncode == 2 and "--definition" in one_error_line(done.stderr)


def test_batch_progress_line_on_a_terminal_only(sim: SimThread, tmp_path: Path) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text("companyName\nA\nB\nC\n")
    leader, follower = pty.openpty()
    argv = ["batch", str(cases), "--definition", "kyc-basic", "--output", str(tmp_path / "o")]
    process = subprocess.Popen(  # noqa: S603
        [*ENTRY, *argv, *api(sim), *FAST], stdout=subprocess.DEVNULL, stderr=follower,
        cwd=ROOT, env=clean_env(),
    )  # fmt: skip
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=30) == 0
    text = seen.decode()
    assert "\r" in text and "3/3 · 3 completed, 0 failed, 0 API errors" in text
    assert "/s" in text


def test_progress_line_is_a_pure_function() -> None:
    counts = Counts(total=40, completed=10, failed=1, api_errors=1)
    assert progress_line(counts, 5.0) == (
        "12/40 · 10 completed, 1 failed, 1 API errors · 2.4/s · ETA 12s"
    )
    assert progress_line(Counts(total=3), 0.0) == "0/3 · 0 completed, 0 failed, 0 API errors"
    assert progress_line(Counts(total=2, completed=2), 4.0).endswith("0.5/s")  # no ETA at the end
    assert [duration(s) for s in (0.2, 59, 61, 3725)] == ["1s", "59s", "1m01s", "1h02m"]


def test_batch_ctrl_c_prints_a_summary_and_the_rerun_resumes(
    sim: SimThread, tmp_path: Path
) -> None:
    cases, output = tmp_path / "cases.csv", tmp_path / "out.jsonl"
    cases.write_text("externalId,companyName\ns-1,A\ns-2,B\n")
    argv = ["batch", str(cases), "--definition", "kyc-slow", "--output", str(output)]
    child = Child(*argv, *api(sim), *FAST, "--json")
    try:
        for _ in range(500):  # the started records are on disk while the workflows run
            if output.exists() and len(read_jsonl(output)) == 2:
                break
            time.sleep(0.02)
        records = read_jsonl(output)
        assert {r["event"] for r in records} == {"started"}
        started = {r["workflowId"] for r in records}
        statuses = sim.call(lambda: {sim.sim.workflow_status(w) for w in started})
        assert statuses == {"IN_PROGRESS"}  # still running
    finally:
        code, err = child.stop()
    assert code == 130, err
    assert "Traceback" not in err
    assert "batch: 0 completed" in err
    assert "rerun the same command to resume" in err
    summary = json.loads(child.line(child.stdout))
    assert summary["interrupted"] is True and summary["notRun"] == 2

    for workflow_id in started:
        sim.run(sim.sim.complete(workflow_id))
    before = workflow_count(sim)
    done = run(*argv, *api(sim), *FAST)
    assert done.returncode == 0, done.stderr
    finished = {r["workflowId"] for r in read_jsonl(output)[-2:]}
    assert finished == started and workflow_count(sim) == before  # waited for, not run again


def test_batch_never_reruns_a_run_request_of_unknown_outcome(
    sim: SimThread, tmp_path: Path
) -> None:
    cases, output = tmp_path / "cases.csv", tmp_path / "out.jsonl"
    cases.write_text("externalId,companyName\nu-1,A\n")
    sim.call(lambda: sim.sim.fail_next("POST", "/workflows/run", status=500))
    before = workflow_count(sim)
    done = run("batch", str(cases), "--definition", "kyc-basic", "--output", str(output),
               *api(sim), *FAST)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert read_jsonl(output)[-1]["outcomeUnknown"] is True
    again = run("batch", str(cases), "--definition", "kyc-basic", "--output", str(output),
                *api(sim), *FAST)  # fmt: skip
    assert again.returncode == 1
    assert "unknown outcome" in again.stderr and "not run again" in again.stderr
    assert workflow_count(sim) == before  # the 500 came before the effect; nothing was rerun


# -- run and wait -------------------------------------------------------------------------------


def wait_for_new_workflow(sim: SimThread, before: set[str]) -> str:
    for _ in range(500):
        new = set(sim.call(lambda: list(sim.sim.workflows))) - before
        if new:
            return new.pop()
        time.sleep(0.02)
    raise AssertionError("no workflow started")


def wait_for_a_poll(sim: SimThread, workflow_id: str) -> None:
    """Until the CLI polled ``workflow_id``: it is waiting (not starting up) when this returns."""
    path = f"/workflows/{workflow_id}"
    for _ in range(1500):
        if sim.call(lambda: any(r.path == path for r in sim.sim.requests)):
            return
        time.sleep(0.02)
    raise AssertionError("never polled")


def test_run_ctrl_c_names_the_workflow_and_the_wait_command(sim: SimThread) -> None:
    before = set(sim.call(lambda: list(sim.sim.workflows)))
    child = Child("run", "--definition", "kyc-slow", "--company-name", "A", *api(sim), *FAST)
    try:
        workflow_id = wait_for_new_workflow(sim, before)
        wait_for_a_poll(sim, workflow_id)  # the run answered: the CLI is waiting
    finally:
        code, err = child.stop()
    assert code == 130, err
    assert f"workflows-async wait {workflow_id}" in err and "Traceback" not in err


def test_wait_ctrl_c_names_the_wait_command(sim: SimThread) -> None:
    done = run("run", "--definition", "kyc-slow", "--no-wait", *api(sim))
    workflow_id = json.loads(done.stdout)["id"]
    child = Child("wait", workflow_id, *api(sim), *FAST)
    try:
        wait_for_a_poll(sim, workflow_id)
    finally:
        code, err = child.stop()
    assert code == 130, err
    assert f"workflows-async wait {workflow_id}" in err


def test_verbose_shows_the_library_log_on_stderr(sim: SimThread) -> None:
    done = run("run", "--definition", "kyc-instant", "--no-wait", *api(sim))
    workflow_id = json.loads(done.stdout)["id"]
    sim.call(lambda: sim.sim.fail_next("GET", "/workflows/{id}", status=500))
    quiet = run("wait", workflow_id, *api(sim), *FAST, "--retries", "0")
    assert quiet.returncode == 0 and "DEBUG" not in quiet.stderr
    sim.call(lambda: sim.sim.fail_next("GET", "/workflows/{id}", status=500))
    loud = run("wait", workflow_id, *api(sim), *FAST, "--retries", "0", "-vv")
    assert loud.returncode == 0
    assert "DEBUG: workflows_async" in loud.stderr and "poll of" in loud.stderr


def test_verbose_shows_retries(sim: SimThread) -> None:
    done = run("run", "--definition", "kyc-instant", "--no-wait", *api(sim))
    workflow_id = json.loads(done.stdout)["id"]
    sim.call(lambda: sim.sim.fail_next("GET", "/workflows/{id}", status=502))
    quiet = run("status", workflow_id, *api(sim))
    assert quiet.returncode == 0 and "retrying" not in quiet.stderr
    sim.call(lambda: sim.sim.fail_next("GET", "/workflows/{id}", status=502))
    loud = run("status", workflow_id, *api(sim), "-v")
    assert loud.returncode == 0, loud.stderr
    assert "INFO: workflows_async.http: retrying GET /workflows/{id}" in loud.stderr
    assert "502" in loud.stderr and "test-secret" not in loud.stderr


# -- errors that say what to do ---------------------------------------------------------------


def test_unreadable_csv(tmp_path: Path) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_bytes(b"companyName\n\xff\xfe\n")
    done = run("batch", str(cases), "--definition", "x", "--base-url", "https://h", "--token", "t")
    assert done.returncode == 2 and "not UTF-8" in one_error_line(done.stderr)


def test_bad_json_parameters(sim: SimThread) -> None:
    done = run("run", "--definition", "kyc-basic", "--parameters", "{nope", *api(sim))
    assert done.returncode == 2 and "--parameters: not valid JSON" in one_error_line(done.stderr)


def test_unreachable_base_url_names_the_flag() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = run("status", "abc", "--base-url", url, "--token", "tot_x", "--insecure-http",
               "--retries", "0")  # fmt: skip
    assert done.returncode == 1
    assert "check --base-url" in one_error_line(done.stderr)
    env = clean_env(WORKFLOWS_BASE_URL=url, WORKFLOWS_ORG_TOKEN="tot_x")
    done = run("status", "abc", "--insecure-http", "--retries", "0", env=env)
    assert "check WORKFLOWS_BASE_URL" in one_error_line(done.stderr)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.test", "--base-url must be an absolute https:// URL"),
        ("http://127.0.0.1:9", "--base-url uses plain http://"),
    ],
)
def test_a_bad_base_url_names_the_flag(url: str, message: str) -> None:
    done = run("status", "abc", "--base-url", url, "--token", "t")
    assert done.returncode == 2 and message in one_error_line(done.stderr)


def test_bad_token_says_what_to_check(sim: SimThread) -> None:
    flag = run("status", "abc", "--base-url", sim.base_url, "--insecure-http",
               "--token", "tot_not-a-real-one")  # fmt: skip
    line = one_error_line(flag.stderr)
    assert flag.returncode == 1 and "401" in line and "check --token" in line
    assert "tot_not-a-real-one" not in flag.stderr
    env = clean_env(WORKFLOWS_BASE_URL=sim.base_url, WORKFLOWS_ORG_TOKEN="tot_not-a-real-one")
    from_env = run("status", "abc", "--insecure-http", env=env)
    assert "check WORKFLOWS_ORG_TOKEN (or WORKFLOWS_API_KEY/SECRET)" in from_env.stderr


def test_result_not_ready_carries_the_code_and_a_hint(sim: SimThread) -> None:
    done = run("run", "--definition", "kyc-slow", "--no-wait", *api(sim))
    workflow_id = json.loads(done.stdout)["id"]
    result = run("result", workflow_id, *api(sim))
    line = one_error_line(result.stderr)
    assert result.returncode == 1
    assert f"GET /workflows/{workflow_id}/result answered 409 result_not_ready" in line
    assert f"has not finished yet; wait for it: workflows-async wait {workflow_id}" in line


def test_403_names_the_missing_permission(sim: SimThread) -> None:
    token = sim.call(lambda: sim.sim.organization_token(["can_view_workspace"]))
    env = clean_env(WORKFLOWS_ORG_TOKEN=token, WORKFLOWS_BASE_URL=sim.base_url)
    done = run("run", "--definition", "kyc-basic", "--insecure-http", env=env)
    line = one_error_line(done.stderr)
    assert done.returncode == 1 and "the token lacks permission can_run" in line
    assert token not in done.stderr


# -- simulate --json and sim-control ----------------------------------------------------------


def test_every_faults_knob_is_a_simulate_flag() -> None:
    import dataclasses

    from workflows_async.testing import Faults

    parser = build_parser()
    args, extra = parser.parse_known_args(["simulate"])
    sub = next(
        action.choices["simulate"]
        for action in parser._actions
        if isinstance(action.choices, dict) and "simulate" in action.choices
    )
    flags = {flag for action in sub._actions for flag in action.option_strings}
    for field in dataclasses.fields(Faults):
        assert "--" + field.name.replace("_", "-") in flags, field.name
    assert not extra and args.func.__name__ == "simulate_command"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--definition", "d"],
        ["execute", "--definition", "d", "--locale", "en"],
        ["wait", "some-id"],
        ["batch", "rows.csv"],
    ],
)
def test_timeout_defaults_to_the_librarys(argv: list[str]) -> None:
    """The command's --timeout and Session.run_and_wait/wait share one default."""
    import inspect

    from workflows_async import Session

    default = inspect.signature(Session.run_and_wait).parameters["timeout"].default
    assert inspect.signature(Session.wait).parameters["timeout"].default == default
    assert build_parser().parse_args(argv).timeout == default


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False),  # noqa: S104 - a value under test, nothing binds it
     ("::", False), ("192.168.1.5", False), ("localhost.example", False)],
)  # fmt: skip
def test_a_server_bound_beyond_this_machine_warns(
    capsys: pytest.CaptureFixture[str], host: str, local: bool
) -> None:
    from workflows_async._urls import is_local_url
    from workflows_async.cli.servers import _check_host

    _check_host(host)
    warned = "reachable from other machines" in capsys.readouterr().err
    assert warned is not local
    bracketed = f"[{host}]" if ":" in host else host
    assert is_local_url(f"http://{bracketed}:8080/") is local  # one rule for hosts and URLs


def control(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return run("sim-control", *argv, "--url", url)


def test_simulate_json_and_sim_control_end_to_end() -> None:
    child = Child(
        "simulate", "--port", "0", "--json", "--time-scale", "1000", "--out-of-order",
        "--error-statuses", "500,502", "--seed", "1",
    )  # fmt: skip
    try:
        start: dict[str, Any] = json.loads(child.line(child.stdout))
        url = start["baseUrl"]
        assert url.startswith("http://127.0.0.1:") and start["key"] == "test-key"
        assert start["organizationToken"].startswith("tot_") and start["webhookKeyId"]
        assert start["controlUrl"] == f"{url}/_control/"

        faults = json.loads(control(url, "faults").stdout)
        assert faults["out_of_order"] is True and faults["error_statuses"] == [500, 502]

        token = ["--base-url", url, "--insecure-http", "--token", start["organizationToken"]]
        done = run("run", "--definition", "kyc-basic", "--no-wait", *token)
        workflow_id = json.loads(done.stdout)["id"]
        completed = control(url, "complete", workflow_id, "--status", "FAILED")
        assert completed.returncode == 0, completed.stderr
        assert json.loads(completed.stdout) == {"id": workflow_id, "status": "FAILED"}
        waited = run("wait", workflow_id, *token, *FAST)
        assert waited.returncode == 3  # a failure status

        changed = control(url, "faults", "error_rate=1", "error_statuses=[502]")
        assert json.loads(changed.stdout)["error_rate"] == 1
        status = run("status", workflow_id, *token, "--retries", "0")
        assert status.returncode == 1 and "answered 502" in status.stderr
        control(url, "faults", "error_rate=0")
        assert run("status", workflow_id, *token).returncode == 0

        unknown = control(url, "faults", "no_such_knob=1")
        assert unknown.returncode == 1 and "unknown fault 'no_such_knob'" in unknown.stderr
        bad = control(url, "faults", "error_rate=2")
        assert bad.returncode == 1 and "error_rate" in one_error_line(bad.stderr)
        missing = control(url, "complete", "no-such-workflow")
        assert missing.returncode == 1 and "404" in one_error_line(missing.stderr)
        remote = run("sim-control", "faults", "--url", "https://api.example.test")
        assert remote.returncode == 2
    finally:
        code, err = child.stop()
    assert code == 0, err


def test_control_endpoint_wants_json_and_stays_out_of_the_api(sim: SimThread) -> None:
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - a localhost URL
        f"{sim.base_url}/_control/faults", data=b"error_rate=1", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    # The in-test Simulator has no control endpoint unless asked (Simulator(control=True)).
    assert caught.value.code == 404


def test_sim_control_without_a_running_simulator() -> None:
    done = run("sim-control", "faults", "--url", f"http://127.0.0.1:{closed_port()}")
    assert done.returncode == 1 and "is it running?" in one_error_line(done.stderr)
