"""Run mypy --strict once over a few snippets, for tests of the public typing.

One mypy run per call (mypy's start-up dominates): pass every snippet of a test module at once.
The cache is the project's own ``.mypy_cache``, so a warm run takes a few seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent


def mypy_errors(directory: Path, snippets: dict[str, str]) -> dict[str, list[str]]:
    """Write ``snippets`` (file stem -> source) to ``directory`` and type-check them together
    with ``--strict``; returns the error lines of each stem (an empty list: clean)."""
    paths = []
    for stem, source in snippets.items():
        path = directory / f"{stem}.py"
        path.write_text(source)
        paths.append(str(path))
    stdout, stderr, _ = api.run(
        [
            "--strict",
            "--python-version=3.11",
            "--no-error-summary",
            "--show-error-codes",
            f"--cache-dir={ROOT / '.mypy_cache'}",
            *paths,
        ]
    )
    assert not stderr, stderr
    errors: dict[str, list[str]] = {stem: [] for stem in snippets}
    for line in stdout.splitlines():
        match = re.match(r"(?:.*[/\\])?([\w-]+)\.py:\d+: (error|note): (.*)", line)
        if match and match.group(2) == "error" and match.group(1) in errors:
            errors[match.group(1)].append(line)
    return errors
