"""A test stack: a Simulator, a Session pointed at it, and the Session's webhook sub-app served
on a real localhost socket and registered with the Simulator.

Every server a test starts listens on port 0 (``workflows_async.testing.serve``) and is found by
the port read back from its socket: no test picks a "free" port and binds it later (another
process may take it in between).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

import workflows_async as wa
from workflows_async.testing import Faults, Simulator, serve

FAST_POLL = wa.PollPolicy(initial_delay=0.2, max_interval=0.5, rate=200, max_in_flight=50)


@dataclasses.dataclass
class Stack:
    sim: Simulator
    session: wa.Session
    webhook_url: str

    def polls(self) -> int:
        return self.sim.calls_by_route["GET /workflows/{id}"]


@asynccontextmanager
async def receiver(session: wa.Session) -> AsyncIterator[str]:
    """The session's webhook sub-app mounted at /webhooks and served; yields its URL."""
    app = web.Application()
    app.add_subapp("/webhooks", session.webhook_app())
    async with serve(app) as served:
        yield f"{served.url}/webhooks/"


@asynccontextmanager
async def stack(
    *,
    poll: wa.PollPolicy = FAST_POLL,
    faults: Faults | None = None,
    time_scale: float = 0.02,
    register_webhook: bool = True,
    **session_options: Any,
) -> AsyncIterator[Stack]:
    async with Simulator(time_scale=time_scale, seed=7, faults=faults) as sim:
        session = wa.Session(
            sim.base_url,
            wa.KeySecretAuth(sim.key, sim.secret),
            allow_insecure_http=True,
            poll=poll,
            **session_options,
        )
        async with receiver(session) as url:
            if register_webhook:
                sim.add_webhook_url(url)
            async with session:
                yield Stack(sim, session, url)
