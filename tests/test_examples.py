"""Every script under ``examples/`` runs as written (a child process, localhost only).

``examples/test_with_simulator.py`` is a pytest module for users to copy; it is not under our
``testpaths``, so it is run here explicitly, once, through pytest in a child process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, *argv], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "aiohttp_app.py",
            ["POST /verify -> 200", "'status': 'COMPLETED'", "'channel': 'webhook'"],
        ),
        ("background_worker.py", ["processed 8 workflows: 7 COMPLETED, 1 FAILED"]),
    ],
)
def test_example_script_runs(script: str, expected: list[str]) -> None:
    done = run(str(EXAMPLES / script))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in done.stdout


def test_background_worker_logs_webhook_events() -> None:
    done = run(str(EXAMPLES / "background_worker.py"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("worker: event: workflow") == 8
    assert "ended FAILED" in done.stderr


def test_the_simulator_fixture_example_passes_under_pytest() -> None:
    done = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/test_with_simulator.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout


@pytest.mark.parametrize("name", ["aiohttp_app", "background_worker", "test_with_simulator"])
def test_example_has_an_async_main(name: str) -> None:
    text = (EXAMPLES / f"{name}.py").read_text()
    assert "async def main()" in text
    assert 'if __name__ == "__main__":' in text
