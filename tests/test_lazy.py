"""What the cheap entry points import: the pytest plugin (loaded by every pytest run of a project
that has the package installed) and ``workflows-async --version`` stay off aiohttp and the rest.

Each check runs in a fresh interpreter, since this one has imported everything already."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HEAVY = {
    "aiohttp",
    "aiohttp.web",
    "cryptography",
    "msgspec",
    "workflows_async.session",
    "workflows_async.testing._simulator",
}


def modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(  # noqa: S603 - our own interpreter and command
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout))


def test_the_pytest_plugin_imports_nothing_heavy() -> None:
    assert not HEAVY & modules_after("import workflows_async.testing.plugin")


def test_the_package_and_its_testing_module_load_names_on_first_use() -> None:
    assert not HEAVY & modules_after("import workflows_async, workflows_async.testing")
    loaded = modules_after("import workflows_async.testing as t\nt.Simulator")
    assert {"aiohttp.web", "workflows_async.testing._simulator"} <= loaded


def command() -> str:
    beside = Path(sys.executable).with_name("workflows-async")
    found = str(beside) if beside.exists() else shutil.which("workflows-async")
    assert found is not None, "the workflows-async command is not installed"
    return found


def test_version_does_not_import_aiohttp() -> None:
    # PYTHONPROFILEIMPORTTIME makes the real console script list every module it imports.
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    out = subprocess.run(  # noqa: S603 - our own interpreter and command
        [command(), "--version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0 and out.stdout.startswith("workflows-async ")
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "workflows_async.cli" in imported  # the listing is real
    # msgspec and polling: loaded by the demo's PollPolicy before it was made on first use.
    assert not {"aiohttp", "cryptography", "msgspec", "workflows_async.session"} & imported
    assert not {"workflows_async.polling", "workflows_async.models"} & imported
