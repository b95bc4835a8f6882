"""The ``workflows-async`` command, driven through ``main(argv)`` and as a real process.

The tests are plain functions: ``main`` runs its own event loop, so the Simulator they talk to
runs in a background thread with a loop of its own (``SimThread``), and the long-running
commands (``simulate``, ``listen``, the README's ``demo``) run as child processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
from fake_api import closed_port

from workflows_async.cli import main
from workflows_async.testing import Simulator, WorkflowDefinition

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("demo", "run", "status", "result", "wait", "batch", "simulate", "listen")
ERROR = "workflows-async: error:"


class SimThread:
    """A Simulator served by an event loop in a daemon thread; every access goes through it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> Simulator:
            sim = Simulator(time_scale=0.01, seed=3)
            sim.define("kyc-slow", WorkflowDefinition(duration=100_000.0))
            return await sim.start()

        self.sim = self.run(start())
        self.base_url = self.sim.base_url

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def close(self) -> None:
        self.run(self.sim.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    server = SimThread()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def no_workflows_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WORKFLOWS_"):
            monkeypatch.delenv(name)


def api(sim: SimThread) -> list[str]:
    return [
        "--base-url", sim.base_url, "--api-key", "test-key", "--api-secret", "test-secret",
        "--insecure-http",
    ]  # fmt: skip


FAST = ["--poll-initial", "0.02", "--poll-max", "0.05", "--poll-rate", "200"]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR), err
    return lines[0]


# -- help and bad input ----------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: workflows-async {command}")


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    assert all(command in out for command in COMMANDS)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--definition", "kyc-basic", "--bogus"],
        ["--bogus"],
        ["run"],  # --definition is required
        [],
        ["demo", "--count", "many"],
        ["simulate", "--drop-webhooks", "2"],
    ],
)
def test_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert out == ""
    one_error_line(err)


def test_python_dash_m_reports_a_bad_flag_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workflows_async", "batch", "x.csv", "--definition", "d", "--nope"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    line = one_error_line(done.stderr)
    assert line.endswith("unrecognized arguments: --nope (see 'workflows-async batch --help')")


def test_missing_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(
        capsys, "run", "--definition", "kyc-basic", "--base-url", "https://api.example.test"
    )
    assert code == 2
    assert "no credentials" in one_error_line(err)


def test_missing_base_url(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "status", "abc", "--token", "t")
    assert code == 2
    assert "--base-url" in one_error_line(err)


def test_plain_http_needs_the_opt_in(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "status", "abc", "--token", "t", "--base-url", "http://127.0.0.1:9")
    assert code == 2
    assert "http://" in one_error_line(err)


def test_unreachable_base_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, out, err = cli(
        capsys, "run", "--definition", "kyc-basic", "--base-url", url, "--api-key", "k",
        "--api-secret", "not-shown", "--insecure-http", "--retries", "0",
    )  # fmt: skip
    assert code == 1
    assert out == ""
    line = one_error_line(err)
    assert "connect" in line
    assert "not-shown" not in line


def test_secrets_from_the_environment(
    capsys: pytest.CaptureFixture[str], sim: SimThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOWS_BASE_URL", sim.base_url)
    monkeypatch.setenv("WORKFLOWS_API_KEY", "test-key")
    monkeypatch.setenv("WORKFLOWS_API_SECRET", "test-secret")
    code, out, _ = cli(capsys, "run", "--insecure-http", "--definition", "kyc-instant", *FAST)
    assert code == 0
    assert json.loads(out)["channel"] == "run"


def test_wrong_secret_is_an_error_that_does_not_show_it(
    capsys: pytest.CaptureFixture[str], sim: SimThread
) -> None:
    code, _, err = cli(
        capsys, "status", "abc", "--base-url", sim.base_url, "--insecure-http",
        "--api-key", "test-key", "--api-secret", "wrong-secret-value",
    )  # fmt: skip
    assert code == 1
    line = one_error_line(err)
    assert "401" in line
    assert "wrong-secret-value" not in line


# -- run, status, result, wait ----------------------------------------------------------------


def test_run_prints_the_result(capsys: pytest.CaptureFixture[str], sim: SimThread) -> None:
    code, out, _ = cli(
        capsys, "run", *api(sim), *FAST, "--definition", "kyc-basic", "--first-name", "Ada",
        "--parameters", '{"tier": "gold"}',
    )  # fmt: skip
    assert code == 0
    answer = json.loads(out)
    assert answer["status"] == "COMPLETED"
    assert answer["channel"] == "poll"  # no webhook receiver in the CLI
    assert answer["result"]["parameters"] == {"tier": "gold"}
    assert answer["result"]["caseId"] == answer["caseId"]


def test_run_with_a_case_file(
    capsys: pytest.CaptureFixture[str], sim: SimThread, tmp_path: Path
) -> None:
    case_file = tmp_path / "case.json"
    case_file.write_text(json.dumps({"companyName": "Acme", "company_number": "123"}))
    params = tmp_path / "params.json"
    params.write_text('{"level": 2}')
    code, out, _ = cli(
        capsys, "run", *api(sim), *FAST, "--definition", "kyc-basic",
        "--case-file", str(case_file), "--parameters", f"@{params}",
    )  # fmt: skip
    assert code == 0
    result = json.loads(out)["result"]
    assert result["case"]["companyName"] == "Acme"
    assert result["case"]["companyNumber"] == "123"
    assert result["parameters"] == {"level": 2}


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--parameters", "{not json", "not valid JSON"),
        ("--parameters", "[1, 2]", "expected a JSON object"),
        ("--case-file", "/nonexistent/case.json", "--case-file"),
    ],
)
def test_run_bad_json_input(
    capsys: pytest.CaptureFixture[str], sim: SimThread, flag: str, value: str, message: str
) -> None:
    code, _, err = cli(capsys, "run", *api(sim), "--definition", "kyc-basic", flag, value)
    assert code == 2
    assert message in one_error_line(err)


def test_run_failure_status_exits_3(capsys: pytest.CaptureFixture[str], sim: SimThread) -> None:
    code, out, err = cli(capsys, "run", *api(sim), *FAST, "--definition", "kyc-failing")
    assert code == 3
    assert json.loads(out)["status"] == "FAILED"
    assert "FAILED" in err


def test_run_timeout_exits_4_and_names_the_workflow(
    capsys: pytest.CaptureFixture[str], sim: SimThread
) -> None:
    code, out, err = cli(
        capsys, "run", *api(sim), *FAST, "--definition", "kyc-slow", "--timeout", "0.3"
    )
    assert code == 4
    assert out == ""
    line = one_error_line(err)
    assert "workflows-async wait " in line


def test_unknown_definition_is_one_line(capsys: pytest.CaptureFixture[str], sim: SimThread) -> None:
    code, _, err = cli(capsys, "run", *api(sim), "--definition", "no-such-definition")
    assert code == 1
    assert "404" in one_error_line(err)


def test_no_wait_then_status_wait_and_result(
    capsys: pytest.CaptureFixture[str], sim: SimThread
) -> None:
    code, out, _ = cli(capsys, "run", *api(sim), "--definition", "kyc-basic", "--no-wait")
    assert code == 0
    started = json.loads(out)
    assert set(started) == {"id", "caseId", "status"}
    workflow_id = started["id"]

    code, out, _ = cli(capsys, "wait", workflow_id, *api(sim), *FAST)
    assert code == 0
    assert json.loads(out)["status"] == "COMPLETED"

    code, out, _ = cli(capsys, "status", workflow_id, *api(sim))
    assert (code, json.loads(out)["status"]) == (0, "COMPLETED")

    code, out, _ = cli(capsys, "result", workflow_id, *api(sim))
    assert code == 0
    assert json.loads(out)["workflowId"] == workflow_id


def test_status_of_a_bad_id(capsys: pytest.CaptureFixture[str], sim: SimThread) -> None:
    code, _, err = cli(capsys, "status", "../auth/authorize", *api(sim))
    assert code == 2
    one_error_line(err)


# -- batch ------------------------------------------------------------------------------------

CSV = """externalId,firstName,last_name,companyName
c-1,Ada,Lovelace,
c-2,Grace,Hopper,Navy
c-3,only-three-fields,x
,Ken,Thompson,Bell
,,,
c-6,Too,Many,Fields,here
c-7,Edsger,Dijkstra,
"""


def batch(sim: SimThread, path: Path, output: Path, *extra: str) -> list[str]:
    return [
        "batch", str(path), "--definition", "kyc-basic", "--output", str(output),
        *api(sim), *FAST, *extra,
    ]  # fmt: skip


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_reports_bad_rows_runs_the_rest_and_resumes(
    capsys: pytest.CaptureFixture[str], sim: SimThread, tmp_path: Path
) -> None:
    cases, output = tmp_path / "cases.csv", tmp_path / "results.jsonl"
    cases.write_text(CSV)
    code, out, err = cli(capsys, *batch(sim, cases, output))
    assert code == 1  # two malformed rows
    assert out == ""  # the records went to --output
    assert "line 4: expected 4 fields, found 3" in err
    assert "line 7: expected 4 fields, found 5" in err
    assert "\r" not in err  # no progress line into a pipe or a log file
    assert "4 completed, 0 failed" in err
    records = read_jsonl(output)
    done = {r["caseKey"]: r for r in records if r["status"] and r["event"] == "finished"}
    assert set(done) == {"c-1", "c-2", "c-7", next(k for k in done if k.startswith("sha256:"))}
    assert all(r["status"] == "COMPLETED" and r["channel"] == "poll" for r in done.values())
    assert {r["line"] for r in done.values()} == {2, 3, 5, 8}
    text = output.read_text()
    assert all(name not in text for name in ("Ada", "Lovelace", "Grace", "Thompson"))

    count_before = sim.call(lambda: len(sim.sim.workflows))
    code, _, err = cli(capsys, *batch(sim, cases, output))
    assert code == 1  # the malformed rows are still malformed
    assert "4 skipped" in err
    assert sim.call(lambda: len(sim.sim.workflows)) == count_before


def test_batch_jsonl_with_a_bad_line(
    capsys: pytest.CaptureFixture[str], sim: SimThread, tmp_path: Path
) -> None:
    cases, output = tmp_path / "cases.jsonl", tmp_path / "out.jsonl"
    cases.write_text(
        '{"id": "a", "companyName": "A"}\n'
        "{broken\n"
        '{"id": "b", "first_name": "B", "parameters": {"x": 1}}\n'
        '{"id": "c", "email": 5}\n'
    )
    code, _, err = cli(capsys, *batch(sim, cases, output), "--concurrency", "2")
    assert code == 1
    assert "line 2: not valid JSON" in err
    assert "line 4: field 'email' must be a string" in err
    assert {r["caseKey"] for r in read_jsonl(output) if r["status"] == "COMPLETED"} == {"a", "b"}


def test_batch_all_good_exits_0_and_failures_exit_3(
    capsys: pytest.CaptureFixture[str], sim: SimThread, tmp_path: Path
) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text("company_name\nOne\nTwo\nThree\n")
    output = tmp_path / "ok.jsonl"
    code, _, _ = cli(capsys, *batch(sim, cases, output))
    assert code == 0
    keys = [r["caseKey"] for r in read_jsonl(output) if r["event"] == "finished"]
    assert len(set(keys)) == 3

    failing = ["--definition", "kyc-failing"]
    code, _, err = cli(capsys, *batch(sim, cases, tmp_path / "bad.jsonl"), *failing)
    assert code == 3  # the README: 3 for a failure status
    assert "3 failed" in err


@pytest.mark.parametrize(
    "error", ["interrupted", "timeout", "GET /workflows/x/result answered 500"]
)
def test_batch_resumes_a_started_workflow_without_rerunning(
    capsys: pytest.CaptureFixture[str], sim: SimThread, tmp_path: Path, error: str
) -> None:
    code, out, _ = cli(capsys, "run", *api(sim), "--definition", "kyc-basic", "--no-wait")
    workflow_id = json.loads(out)["id"]
    cases, output = tmp_path / "cases.csv", tmp_path / "out.jsonl"
    cases.write_text("externalId,companyName\nk-1,Acme\n")
    interrupted = {"line": 2, "caseKey": "k-1", "workflowId": workflow_id, "status": None,
                   "channel": None, "elapsed": 0.1, "error": error}  # fmt: skip
    output.write_text(json.dumps(interrupted))  # no newline: as if cut short
    count_before = sim.call(lambda: len(sim.sim.workflows))
    code, _, _ = cli(capsys, *batch(sim, cases, output))
    assert code == 0
    last = read_jsonl(output)[-1]
    assert (last["workflowId"], last["status"]) == (workflow_id, "COMPLETED")
    assert sim.call(lambda: len(sim.sim.workflows)) == count_before


def test_batch_stops_at_bad_credentials(
    capsys: pytest.CaptureFixture[str], sim: SimThread, tmp_path: Path
) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text("company_name\nOne\nTwo\n")
    argv = batch(sim, cases, tmp_path / "o.jsonl")
    argv[argv.index("test-secret")] = "wrong"
    code, _, err = cli(capsys, *argv, "--quiet")
    assert code == 1
    assert "401" in one_error_line(err)


@pytest.mark.parametrize(
    ("content", "message"),
    [("nickname,companyName\nx,y\n", "unknown column 'nickname'"), ("", "empty file")],
)
def test_batch_unusable_file(
    capsys: pytest.CaptureFixture[str], sim: SimThread, tmp_path: Path, content: str, message: str
) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text(content)
    code, _, err = cli(capsys, *batch(sim, cases, tmp_path / "o.jsonl"))
    assert code == 2
    assert message in one_error_line(err)


def test_batch_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "batch", str(tmp_path / "none.csv"), "--definition", "x")
    assert code == 2
    assert "no such file" in one_error_line(err)


# -- the long-running commands, as processes ----------------------------------------------------


class Child:
    """A ``python -m workflows_async`` child process whose output lines can be awaited."""

    def __init__(self, *argv: str) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "workflows_async", *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        self._threads: list[threading.Thread] = []
        self.stdout = self._pump(self.process.stdout)
        self.stderr = self._pump(self.process.stderr)

    def _pump(self, stream: IO[str] | None) -> queue.Queue[str]:
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert stream is not None
            for line in stream:
                lines.put(line)

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        self._threads.append(thread)
        return lines

    def line(self, lines: queue.Queue[str], timeout: float = 30) -> str:
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            code, rest = self.stop()
            raise AssertionError(f"no output (exit {code}); stderr: {rest}") from None

    def _drain(self) -> str:
        found = []
        while not self.stderr.empty():
            found.append(self.stderr.get_nowait())
        return "".join(found)

    def stop(self) -> tuple[int, str]:
        """Ctrl-C; the exit code and everything it wrote on stderr not read yet."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for thread in self._threads:  # the pipes reach EOF once the process is gone
            thread.join(timeout=5)
        return code, self._drain()


def test_simulate_serves_until_ctrl_c(capsys: pytest.CaptureFixture[str]) -> None:
    child = Child("simulate", "--port", "0", "--time-scale", "0.01", "--drop-webhooks", "0.5")
    try:
        first = child.line(child.stdout)
        assert first.startswith("Simulator listening on http://127.0.0.1:")
        url = first.split()[-1]
        code, out, _ = cli(
            capsys, "run", "--base-url", url, "--api-key", "test-key", "--api-secret",
            "test-secret", "--insecure-http", "--definition", "kyc-awaiting", *FAST,
        )  # fmt: skip
        assert (code, json.loads(out)["status"]) == (0, "COMPLETED")
    finally:
        code, err = child.stop()
    assert code == 0, err
    assert "Traceback" not in err


def test_listen_prints_verified_events(capsys: pytest.CaptureFixture[str], sim: SimThread) -> None:
    child = Child("listen", "--port", "0", *api(sim))
    url = ""
    try:
        status = child.line(child.stderr)
        assert "listening on http://127.0.0.1:" in status
        url = status.split()[-4]
        sim.call(lambda: sim.sim.add_webhook_url(url))
        code, out, _ = cli(capsys, "run", *api(sim), *FAST, "--definition", "kyc-basic")
        assert code == 0
        workflow_id = json.loads(out)["workflowId"]
        event = json.loads(child.line(child.stdout, timeout=20))
        while event["workflowId"] != workflow_id:  # an earlier test's workflow may end now
            event = json.loads(child.line(child.stdout, timeout=20))
        assert event["status"] == "COMPLETED"
        assert event["eventType"]
    finally:
        if url:
            sim.call(lambda: sim.sim.remove_webhook_url(url))
        code, err = child.stop()
    assert code == 0, err
    assert "Traceback" not in err


def test_batch_ctrl_c_keeps_started_workflows_for_the_rerun(
    capsys: pytest.CaptureFixture[str], sim: SimThread, tmp_path: Path
) -> None:
    cases, output = tmp_path / "cases.csv", tmp_path / "out.jsonl"
    cases.write_text("externalId,companyName\nx-1,A\nx-2,B\n")
    before = set(sim.call(lambda: list(sim.sim.workflows)))
    argv = ["batch", str(cases), "--definition", "kyc-slow", "--output", str(output)]
    child = Child(*argv, *api(sim), *FAST, "--quiet")
    try:
        for _ in range(300):  # until both workflows run at the (simulated) API
            if len(set(sim.call(lambda: list(sim.sim.workflows))) - before) == 2:
                break
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        code, err = child.stop()
    assert code == 130, err
    assert "Traceback" not in err
    records = read_jsonl(output)
    assert {(r["caseKey"], r["error"]) for r in records if r["event"] == "finished"} == {
        ("x-1", "interrupted"),
        ("x-2", "interrupted"),
    }
    started = {r["workflowId"] for r in records}
    assert started == set(sim.call(lambda: list(sim.sim.workflows))) - before

    for workflow_id in started:
        sim.run(sim.sim.complete(workflow_id))
    code, _, _ = cli(capsys, *batch(sim, cases, output), "--definition", "kyc-slow")
    assert code == 0
    finished = {r["workflowId"] for r in read_jsonl(output) if r["status"] == "COMPLETED"}
    assert finished == started  # waited for, not run again


def test_listen_no_verify_only_for_a_local_api(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(
        capsys, "listen", "--no-verify", "--base-url", "https://api.example.test", "--token", "t"
    )
    assert code == 2
    assert "--no-verify" in one_error_line(err)


def demo_command() -> list[str]:
    script = Path(sys.executable).with_name("workflows-async")
    if script.exists():
        return [str(script), "demo"]
    return [sys.executable, "-m", "workflows_async", "demo"]


def test_the_readme_demo_command() -> None:
    """``./scripts/demo`` runs ``.venv/bin/workflows-async demo``: run that, check the table."""
    done = subprocess.run(  # noqa: S603
        demo_command(), capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("workflow "))
    assert lines[header].split() == ["workflow", "definition", "status", "channel", "time", "(s)"]
    rows = [line.split() for line in lines[header + 2 : header + 14]]
    assert len(rows) == 12
    assert lines[header + 14] == ""
    assert {row[3] for row in rows} == {"run", "webhook", "poll"}
    assert {row[2] for row in rows} == {"COMPLETED", "FAILED"}
    assert [row[1] for row in rows if row[2] == "FAILED"] == ["kyc-failing"]
    assert [row[3] for row in rows if row[1] == "kyc-instant"] == ["run"]
    assert all(len(row[0]) == 8 and float(row[4]) < 15 for row in rows)
    totals = "\n".join(lines[header + 14 :])
    assert "finished by: webhook" in totals
    assert "failures: 1" in totals
    assert "API calls:" in totals


def test_demo_json_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "demo", "--count", "5", "--json")
    assert code == 0
    report = json.loads(out)
    assert len(report["workflows"]) == 5
    assert {w["channel"] for w in report["workflows"]} == {"run", "webhook", "poll"}
    assert report["apiCalls"] > report["polls"] > 0
