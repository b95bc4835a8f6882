"""The layering ARCHITECTURE.md draws, checked on the source: pure modules stay pure, and the
Simulator stays independent of the client it judges.

Pure modules decide; they do no I/O and hold no event loop: they import no asyncio, aiohttp,
redis, socket or os, and of this package only other pure modules. The Simulator's modules
(``workflows_async/testing/_*.py``) import nothing of the client but two neutral helpers, so a
bug in the client cannot hide behind the same bug in its judge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "workflows_async"

PURE = {
    "_api_errors",
    "_env",
    "_ids",
    "_lazy",
    "_lost",
    "_poll_plan",
    "_poll_schedule",
    "_resp",
    "_retry",
    "_ttl",
    "_urls",
    "errors",
    "events",
    "executions",
    "jws",
    "models",
    "records",
    "stats",
    "statuses",
}
"""Modules of ``workflows_async`` that must stay pure."""

EDGE = {
    "_deadlines",
    "_http",
    "_logging",
    "_metrics",
    "_options",
    "_otel",
    "_pending_wait",
    "_redis_lanes",
    "_redis_pubsub",
    "_redis_reader",
    "_result_fetch",
    "_serve",
    "_v2_calls",
    "asgi",
    "auth",
    "blocking",
    "bus",
    "cli",
    "engine",
    "hooks",
    "keys",
    "polling",
    "redis_bus",
    "registry",
    "session",
    "webhooks",
}
"""The modules that hold the event loop, sockets, tasks, clocks or the environment."""

IO_MODULES = {"asyncio", "aiohttp", "redis", "socket", "os", "subprocess", "threading"}
SIMULATOR_MAY_USE = {"_lazy", "_serve"}


def imports(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, absolute, top-level code and function bodies alike."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module or "")
                continue
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            if node.module:
                found.add(".".join([*base, node.module]))
            else:  # from . import x, y
                found.update(".".join([*base, alias.name]) for alias in node.names)
    return found


def own(name: str) -> str | None:
    """The module of this package ``name`` is (its first component below the package)."""
    parts = name.split(".")
    return parts[1] if parts[0] == "workflows_async" and len(parts) > 1 else None


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_do_no_io_and_import_only_pure_modules(module: str) -> None:
    found = imports(PACKAGE / f"{module}.py", "workflows_async")
    io = {name for name in found if name.split(".")[0] in IO_MODULES}
    assert not io, f"{module} imports {sorted(io)}"
    impure = {own(name) for name in found if own(name) not in (None, *PURE)}
    assert not impure, f"{module} imports the impure {sorted(impure)}"  # type: ignore[type-var]


def test_every_module_is_placed() -> None:
    """A new module is a decision: pure or at the edge, and listed here as one or the other."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__", "_version"}
    modules |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} - {"testing"}
    assert not PURE & EDGE
    assert modules == PURE | EDGE, f"unplaced: {sorted(modules ^ (PURE | EDGE))}"


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "testing").glob("_*.py")), ids=lambda path: path.name
)
def test_the_simulator_imports_nothing_of_the_client(path: Path) -> None:
    found = imports(path, "workflows_async.testing")
    client = {own(name) for name in found if own(name) not in (None, "testing", *SIMULATOR_MAY_USE)}
    assert not client, f"{path.name} imports {sorted(client)}"  # type: ignore[type-var]
