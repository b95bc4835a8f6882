"""Helper processes: a server or a probe in its own interpreter, so its CPU is not ours.

A child is ``python benchmarks/_child.py ROLE CONFIG_JSON``. It prints one JSON line when it
is ready (its ``info``: URLs, keys, results), then answers one JSON line per JSON command read
on stdin; ``{"cmd": "cpu"}`` (its ``time.process_time()``) works in every role. Closing its
stdin ends it. ``Child.inline = True`` (set by ``run.py --smoke``) runs every role in this
process instead, behind the same interface and with the same JSON round trip of every answer:
the role's code runs, no interpreter is started, and its figures mean nothing.

Invariants: a child binds 127.0.0.1 only, on port 0 (its ``info`` says which port it got); a
child that does not exit within ``close``'s grace period is killed; a child that dies early
raises here with its exit code, never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["ROLES", "Child", "Handle", "Ready", "Role", "find_role"]

Handle = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""A role's answer to one command (other than ``cpu``)."""
Ready = tuple[dict[str, Any], Handle]
"""What a role yields: the info to print, and its command handler."""
Role = Callable[[dict[str, Any]], AbstractAsyncContextManager[Ready]]
"""A role: given its config, an async context manager that yields ``Ready``."""

_CHILD = Path(__file__).with_name("_child.py")
_LINE_LIMIT = 1 << 26  # replies can carry per-workflow counts
# role -> (module, function); imported on demand so a child loads only what it needs.
ROLES = {
    "fixed": ("_rawhttp", "fixed_server"),
    "webhooks": ("_ingest", "webhook_server"),
    "asgi-webhooks": ("_ingest", "asgi_webhook_server"),
    "sims": ("_simhost", "simulators"),
    "memory": ("_memory", "memory_probe"),
    "simcap": ("_simcap", "capacity_host"),
    "bare": ("_simcap", "bare_api"),
    "receiver": ("_latency", "webhook_receiver"),
}


def find_role(name: str) -> Role:
    """The role function called ``name`` (imported now)."""
    module, function = ROLES[name]
    found: Role = getattr(importlib.import_module(module), function)
    return found


def _json(data: dict[str, Any]) -> dict[str, Any]:
    """What the other side of the pipe would read."""
    decoded: dict[str, Any] = json.loads(json.dumps(data))
    return decoded


class Child:
    """A running helper process; ``info`` is what it printed when ready."""

    inline = False
    """Run roles in this process (the smoke mode; see the module docstring)."""

    def __init__(self, role: str, process: asyncio.subprocess.Process, info: dict[str, Any]):
        self.role = role
        self.info = info
        self._process = process

    @classmethod
    async def start(cls, role: str, config: dict[str, Any], *, timeout: float = 300.0) -> Child:
        if cls.inline:
            return await _Inline.run(role, find_role(role), config)
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


class _Inline(Child):
    """A role run in this process, behind ``Child``'s interface (see the module docstring)."""

    def __init__(
        self, role: str, info: dict[str, Any], handle: Handle, stack: contextlib.AsyncExitStack
    ) -> None:
        self.role, self.info = role, info
        self._handle, self._stack = handle, stack

    @classmethod
    async def run(cls, name: str, role: Role, config: dict[str, Any]) -> Child:
        stack = contextlib.AsyncExitStack()
        info, handle = await stack.enter_async_context(role(_json(config)))
        return cls(name, _json(info), handle, stack)

    async def ask(self, command: str, **arguments: Any) -> dict[str, Any]:
        if command == "cpu":
            return {"cpu": time.process_time()}
        return _json(await self._handle(_json({"cmd": command, **arguments})))

    async def close(self, grace: float = 10.0) -> None:
        await self._stack.aclose()
