"""Serve an aiohttp application on a socket while a block runs: the one helper the testing
tools, the CLI, the benchmarks and the examples share (as aiohttp's ``TestServer`` does for
aiohttp's own tests).

Invariants: with ``port=0`` the operating system picks the port and it is read back from the
bound socket, so there is no window between choosing a free port and binding it in which
another process could take it; the runner is cleaned up when the block ends, however it ends;
no access log is written unless asked for (an access line carries paths with workflow ids).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Served", "serve"]


@dataclasses.dataclass(frozen=True, slots=True)
class Served:
    """Where an application is being served."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port`` (an IPv6 host in brackets), without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@contextlib.asynccontextmanager
async def serve(
    app: web.Application,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    access_log: bool = False,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[Served]:
    """Serve ``app`` on ``host:port`` (port 0: one the system picks) while the block runs."""
    from aiohttp import web

    if access_log:
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout)
    else:
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=shutdown_timeout, access_log=None
        )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield Served(host, int(runner.addresses[0][1]))
    finally:
        await runner.cleanup()
