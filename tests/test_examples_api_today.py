"""``examples/records_and_executions.py`` runs as written (a child process, localhost only)."""

from __future__ import annotations

from test_examples import EXAMPLES, run


def test_records_and_executions_example_runs() -> None:
    done = run(str(EXAMPLES / "records_and_executions.py"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("version 1 fields ['email']")
    assert lines[1].endswith("started RUNNING, ended COMPLETED (by webhook)")
    assert lines[3] == "the token lacks can_run"
    assert "ada@" not in done.stdout  # a record's values are never printed


def test_example_has_an_async_main() -> None:
    text = (EXAMPLES / "records_and_executions.py").read_text()
    assert "async def main()" in text and 'if __name__ == "__main__":' in text
