"""A test stack: a Simulator, a Session pointed at it, and the Session's webhook sub-app served
on a real localhost socket and registered with the Simulator."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

import workflows_async as wa
from workflows_async.testing import Faults, Simulator

FAST_POLL = wa.PollPolicy(initial_delay=0.2, max_interval=0.5, rate=200, max_in_flight=50)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class Stack:
    sim: Simulator
    session: wa.Session
    webhook_url: str

    def polls(self) -> int:
        return self.sim.calls_by_route["GET /workflows/{id}"]


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()  # port 0: no window for another process
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def receiver(session: wa.Session) -> AsyncIterator[str]:
    """The session's webhook sub-app mounted at /webhooks and served; yields its URL."""
    app = web.Application()
    app.add_subapp("/webhooks", session.webhook_app())
    runner, root = await serve(app)
    try:
        yield f"{root}/webhooks/"
    finally:
        await runner.cleanup()


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
