"""A real uvicorn server for an ASGI app, in the test's own event loop, on 127.0.0.1 and a
port the OS picks (``uvicorn.Server(config).serve()`` in a task, a bounded wait for ``started``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import uvicorn
from eventually import eventually


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner keeps its own signal handlers


@asynccontextmanager
async def uvicorn_server(
    app: Any, *, lifespan: Literal["auto", "on", "off"] = "on"
) -> AsyncIterator[str]:
    """Serve ``app``; yield its base URL (``http://127.0.0.1:PORT``)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan=lifespan
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if server.started:
            return True
        if task.done():
            await task  # raises what stopped it
            raise RuntimeError("uvicorn stopped before it started")
        return False

    try:
        await eventually(started, "uvicorn to start", timeout=20)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(20):
            await task
