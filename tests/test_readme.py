"""Every ```python block of README.md runs or type-checks, so the README cannot drift.

The convention, per block, set by an HTML comment on the line just before its fence:

- ``<!-- readme-test: run -->``: a complete program, run with this interpreter (it must use only
  the Simulator and localhost, and serve on a port the system picks); it must exit 0.
- ``<!-- readme-test: pytest -->``: a test module for users, run by pytest in a project of its
  own (strict asyncio mode), which must pass.
- ``<!-- readme-test: sketch -->``: a recipe for a framework this suite does not install
  (Django, Flask, Celery, arq): only compiled, so its syntax cannot rot; not type-checked.
- no comment: the block needs a real API, so it is only type-checked.

Every other block is also type-checked with ``mypy --strict``, all in one mypy run. A block that is
not a valid module by itself (top-level ``await`` or ``async with``: a fragment) is checked
inside an ``async def``. Both kinds may use the names of `PRELUDE` without defining them.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from typecheck import mypy_errors

README = Path(__file__).resolve().parent.parent / "README.md"

PRELUDE = """\
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

from aiohttp import web

import workflows_async as wa


class _Store(Protocol):
    async def mark_started(self, workflow_id: str) -> None: ...
    async def mark_done(self, workflow_id: str) -> None: ...
    async def unfinished(self) -> list[str]: ...


session: wa.Session
case: wa.Case
case_id: str
workflow_id: str
record: wa.Record
store: _Store
"""

KINDS = frozenset({"run", "pytest", "check", "sketch"})
MARK = re.compile(r"<!-- readme-test: (\w+) -->\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence
    kind: str  # "run", "pytest" or "check"
    source: str

    @property
    def name(self) -> str:
        return f"readme_line_{self.line}"


def blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index
            end = lines.index("```", start + 1)
            mark = MARK.match(lines[start - 1]) if start else None
            kind = mark.group(1) if mark else "check"
            assert kind in KINDS, f"README line {start}: unknown {kind!r}"
            found.append(Block(start + 1, kind, "\n".join(lines[start + 1 : end]) + "\n"))
            index = end
        index += 1
    return found


def is_module(source: str) -> bool:
    try:
        compile(source, "<readme>", "exec", dont_inherit=True)  # top-level await fails here
    except SyntaxError:
        return False
    return True


def checked_source(block: Block) -> str:
    if is_module(block.source):
        return PRELUDE + "\n\n" + block.source
    body = textwrap.indent(block.source, "    ")
    return PRELUDE + "\n\nasync def _readme_block() -> None:\n" + body


def test_the_readme_has_blocks_of_every_kind() -> None:
    kinds = {block.kind for block in blocks()}
    assert kinds == KINDS


def test_sketches_compile() -> None:
    for block in blocks():
        if block.kind == "sketch":
            body = textwrap.indent(block.source, "    ")
            wrapped = "async def _readme_block() -> None:\n" + body
            assert is_module(block.source) or is_module(wrapped), f"README line {block.line}"


def test_every_block_type_checks(tmp_path: Path) -> None:
    found = {block.name: block for block in blocks() if block.kind != "sketch"}
    errors = mypy_errors(tmp_path, {name: checked_source(b) for name, b in found.items()})
    report = []
    for name, lines in errors.items():
        block = found[name]
        before = len(checked_source(block).splitlines()) - len(block.source.splitlines())
        for line in lines:
            number, message = re.search(r"\.py:(\d+): error: (.*)", line).groups()  # type: ignore[union-attr]
            report.append(f"README.md:{block.line + int(number) - before}: {message}")
    assert report == []


@pytest.mark.parametrize("block", [b for b in blocks() if b.kind == "run"], ids=lambda b: b.name)
def test_runnable_blocks_run(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(block.source)
    done = subprocess.run(  # noqa: S603 - our own interpreter and file
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = re.findall(r"print\(.*\)  # (.+)", block.source)
    for comment in expected:
        assert comment.split(" (")[0] in done.stdout, (comment, done.stdout)


@pytest.mark.parametrize("block", [b for b in blocks() if b.kind == "pytest"], ids=lambda b: b.name)
def test_test_blocks_pass(block: Block, tmp_path: Path) -> None:
    (tmp_path / "test_readme_block.py").write_text(block.source)
    ini = "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    (tmp_path / "pytest.ini").write_text(ini)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", "-W", "error"]
    if not importlib.metadata.entry_points(group="pytest11", name="workflows_async"):
        args += ["-p", "workflows_async.testing.plugin"]  # a checkout that is not installed
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, *args], capture_output=True, text=True, timeout=110, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "failed" not in done.stdout
