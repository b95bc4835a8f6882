"""Helper processes: a server or a probe in its own interpreter, so its CPU is not ours.

A child is ``python benchmarks/_child.py ROLE CONFIG_JSON``. It prints one JSON line when it
is ready (its ``info``: URLs, keys, results), then answers one JSON line per JSON command read
on stdin; ``{"cmd": "cpu"}`` (its ``time.process_time()``) works in every role. Closing its
stdin ends it.

Invariants: a child binds 127.0.0.1 only, on port 0 (its ``info`` says which port it got); a
child that does not exit within ``close``'s grace period is killed; a child that dies early
raises here with its exit code, never hangs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["Child", "Handle", "Ready"]

Handle = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""A role's answer to one command (other than ``cpu``)."""
Ready = tuple[dict[str, Any], Handle]
"""What a role yields: the info to print, and its command handler."""

_CHILD = Path(__file__).with_name("_child.py")
_LINE_LIMIT = 1 << 26  # replies can carry per-workflow counts


class Child:
    """A running helper process; ``info`` is what it printed when ready."""

    def __init__(self, role: str, process: asyncio.subprocess.Process, info: dict[str, Any]):
        self.role = role
        self.info = info
        self._process = process

    @classmethod
    async def start(cls, role: str, config: dict[str, Any], *, timeout: float = 300.0) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(_CHILD),
            role,
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
        )
        child = cls(role, process, {})
        try:
            child.info = await asyncio.wait_for(child._read(), timeout)
        except BaseException:
            await child.close()
            raise
        return child

    async def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            code = await self._process.wait()
            raise RuntimeError(f"benchmark helper {self.role!r} exited with code {code}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def ask(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send one command and return the child's answer."""
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"cmd": command, **arguments}).encode() + b"\n")
        await self._process.stdin.drain()
        return await self._read()

    async def cpu(self) -> float:
        """The child's CPU seconds so far."""
        return float((await self.ask("cpu"))["cpu"])

    async def close(self, grace: float = 10.0) -> None:
        process = self._process
        if process.returncode is not None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
