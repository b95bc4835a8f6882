"""pytest plugin: a started `Simulator` as the ``workflows_simulator`` fixture.

Invariants: every Simulator a fixture starts is closed at teardown, even when the test fails;
fixtures are declared with ``pytest_asyncio.fixture``, so they work in pytest-asyncio's strict
and auto modes alike (without pytest-asyncio they fall back to plain ``pytest.fixture``, which
anyio's pytest plugin drives).

Loaded automatically through the ``pytest11`` entry point once ``workflows-async`` is installed,
so it is imported by every pytest run of a project that has the package: it imports pytest and
nothing heavy of its own; the Simulator (aiohttp.web, cryptography) loads when a fixture runs.
Override constructor arguments per test with a marker::

    @pytest.mark.workflows_simulator(time_scale=0.001, faults=Faults(drop_webhooks=1.0))
    async def test_lost_webhooks(workflows_simulator: Simulator) -> None: ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ["FAST_DEFAULTS", "workflows_simulator", "workflows_simulator_factory"]

F = TypeVar("F", bound=Callable[..., Any])

FAST_DEFAULTS: dict[str, Any] = {"time_scale": 0.01, "webhook_timeout": 100.0, "seed": 0}
"""Simulator arguments of the fixtures: a 0.5 s workflow takes 5 ms, a retry waits 50 ms,
a delivery attempt times out after 1 s, and fault randomness is reproducible."""

MARKER = "workflows_simulator"


def _async_fixture(function: F) -> F:
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - anyio's plugin runs plain async fixtures
        return cast(F, pytest.fixture(function))
    return cast(F, pytest_asyncio.fixture(function))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): Simulator(...) arguments for the workflows_simulator fixture",
    )


@_async_fixture
async def workflows_simulator(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """A started Simulator with `FAST_DEFAULTS`, overridable by the ``workflows_simulator``
    marker; closed after the test."""
    marker = request.node.get_closest_marker(MARKER)
    overrides = dict(marker.kwargs) if marker is not None else {}
    from ._simulator import Simulator

    async with Simulator(**{**FAST_DEFAULTS, **overrides}) as sim:
        yield sim


@_async_fixture
async def workflows_simulator_factory() -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    """``await workflows_simulator_factory(**kwargs)`` starts one more Simulator (`FAST_DEFAULTS`
    merged under ``kwargs``); all of them are closed after the test."""
    started: list[Simulator] = []

    async def make(**kwargs: Any) -> Simulator:
        from ._simulator import Simulator

        sim = Simulator(**{**FAST_DEFAULTS, **kwargs})
        started.append(sim)
        return await sim.start()

    try:
        yield make
    finally:
        for sim in reversed(started):
            await sim.close()
