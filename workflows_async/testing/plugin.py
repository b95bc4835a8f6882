"""pytest plugin: a started `Simulator` (``workflows_simulator``) and a `Session` on it, its
webhook receiver served and registered (``workflows_session``).

Invariants: every Simulator, Session and receiver a fixture starts is closed at teardown, even
when the test fails; fixtures are declared with ``pytest_asyncio.fixture``, so they work in
pytest-asyncio's strict and auto modes alike (without pytest-asyncio they fall back to plain
``pytest.fixture``, which anyio's pytest plugin drives).

Loaded automatically through the ``pytest11`` entry point once ``workflows-async`` is installed,
so it is imported by every pytest run of a project that has the package: it imports pytest and
nothing heavy of its own; the Simulator, the Session and aiohttp load when a fixture runs.
Override arguments per test with markers::

    @pytest.mark.workflows_simulator(faults=Faults(drop_webhooks=1.0))  # Simulator(...)
    @pytest.mark.workflows_session(api_version=2)  # Session(...), plus webhooks=, scopes=
    async def test_lost_webhooks(workflows_session: Session) -> None: ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from ..session import Session
    from ._simulator import Simulator

__all__ = [
    "FAST_DEFAULTS",
    "FAST_POLL",
    "workflows_session",
    "workflows_simulator",
    "workflows_simulator_factory",
]

F = TypeVar("F", bound=Callable[..., Any])

FAST_DEFAULTS: dict[str, Any] = {"time_scale": 0.01, "webhook_timeout": 100.0, "seed": 0}
"""Simulator arguments of the fixtures: a 0.5 s workflow takes 5 ms, a retry waits 50 ms,
a delivery attempt times out after 1 s, and fault randomness is reproducible."""

FAST_POLL: dict[str, Any] = {"initial_delay": 0.5, "max_interval": 1.0}
"""`PollPolicy` arguments of ``workflows_session``: the first poll 0.5 s after the run, then
at most 1 s apart: a wait whose webhook is lost ends in about half a second, and a webhook
has ample time to win on a busy machine."""

MARKER = "workflows_simulator"
SESSION_MARKER = "workflows_session"


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
    config.addinivalue_line(
        "markers",
        f"{SESSION_MARKER}(webhooks=True, scopes=None, **kwargs): the workflows_session "
        "fixture's receiver, organization token scopes and Session(...) arguments",
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


@_async_fixture
async def workflows_session(
    request: pytest.FixtureRequest, workflows_simulator: Simulator
) -> AsyncIterator[Session]:
    """A started Session on ``workflows_simulator``: an organization token (every permission,
    or the marker's ``scopes``), `FAST_POLL`, ``allow_insecure_http``; its webhook receiver is
    served on 127.0.0.1 and registered with the Simulator, unless the marker says
    ``webhooks=False`` (``webhooks=WebhookSettings(...)`` is served, and given to the Session).
    Other marker keywords go to ``Session(...)``. All closed after the test.
    """
    marker = request.node.get_closest_marker(SESSION_MARKER)
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    webhooks = options.pop("webhooks", True)
    if not isinstance(webhooks, bool):  # WebhookSettings: the Session's own option
        options["webhooks"], webhooks = webhooks, True
    scopes = options.pop("scopes", None)
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from ..auth import OrganizationTokenAuth
    from ..polling import PollPolicy
    from ..session import Session

    sim = workflows_simulator
    options.setdefault("poll", PollPolicy(**FAST_POLL))
    options.setdefault("allow_insecure_http", True)
    auth = OrganizationTokenAuth(sim.organization_token(scopes))
    async with Session(sim.base_url, auth, **options) as session:
        if not webhooks:
            yield session
            return
        app = web.Application()
        app.add_subapp("/webhooks", session.webhook_app())
        async with TestServer(app, host="127.0.0.1") as server:
            url = str(server.make_url("/webhooks/"))
            sim.add_webhook_url(url)
            try:
                yield session
            finally:
                sim.remove_webhook_url(url)
