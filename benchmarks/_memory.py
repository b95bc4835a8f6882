"""Memory and tasks of N pending waits, measured in a fresh helper process (role ``memory``).

Two kinds of wait, each in its own interpreter so one does not reuse the other's freed memory:

- ``library``: N caller tasks, each in ``session._waiting.completion(id, first_poll=3600)`` (what
  ``run_and_wait`` awaits once the run answered), so nothing is due and no HTTP happens;
- ``wait``: N tasks, each the public ``session.wait(id, timeout=3600)`` itself (its deadline,
  stats and wait span included); polling is paused as during a long 429, so no HTTP happens;
- ``bare``: the floor, N caller tasks each awaiting a plain future kept in a dict.

Figures: resident memory (``/proc/self/statm``) per wait, and with ``tracemalloc`` the bytes
per wait allocated by workflows_async's own code (the caller's task and coroutine frame are
allocated by the caller); the library's asyncio tasks at zero and at N waits.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from _proc import Ready

import workflows_async as wa
from workflows_async.engine import WaitEngine

__all__ = ["library_tasks", "memory_probe", "rss_bytes"]

Spawn = Callable[[str], Coroutine[Any, Any, Any]]


def rss_bytes() -> int:
    """This process's resident memory now (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def library_tasks(callers: Collection[asyncio.Task[Any]] = ()) -> int:
    """Running tasks whose coroutine is workflows_async's own (the Simulator's excluded), not
    counting ``callers`` (tasks that are a caller's ``session.wait()`` itself)."""
    count = 0
    for task in asyncio.all_tasks():
        if task in callers:
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if "/workflows_async/" in filename and "/testing/" not in filename:
            count += 1
    return count


async def _library_wait(waiting: WaitEngine, workflow_id: str) -> None:
    await waiting.completion(workflow_id, first_poll=3600.0)


async def _bare_wait(futures: dict[str, asyncio.Future[None]], workflow_id: str) -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    futures[workflow_id] = future
    await future


async def _spawn_all(spawn: Spawn, ids: list[str], settled: Callable[[], bool]) -> list[Any]:
    tasks = [asyncio.create_task(spawn(workflow_id)) for workflow_id in ids]
    while not settled():  # noqa: ASYNC110 - the library's own counters are what is awaited
        await asyncio.sleep(0)
    return tasks


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def memory_probe(config: dict[str, Any]) -> AsyncIterator[Ready]:
    """Role ``memory``: config ``{"kind": "library" | "bare", "n": N}``; the figures as info."""
    n, kind = int(config["n"]), config["kind"]
    session = wa.Session("http://127.0.0.1:9", wa.TokenAuth("unused"), allow_insecure_http=True)
    waiting = session._waiting
    futures: dict[str, asyncio.Future[None]] = {}
    if kind in ("library", "wait"):
        await session.start()

        def spawn(workflow_id: str) -> Coroutine[Any, Any, Any]:
            if kind == "wait":
                return session.wait(workflow_id, timeout=3600.0)
            return _library_wait(waiting, workflow_id)

        def settled() -> bool:
            return len(waiting.scheduler) == len(waiting.registry) == n

        if kind == "wait":
            waiting.scheduler.schedule.paused_until = float("inf")  # no poll is ever due
    else:

        def spawn(workflow_id: str) -> Coroutine[Any, Any, Any]:
            return _bare_wait(futures, workflow_id)

        def settled() -> bool:
            return len(futures) == n

    ids = [str(uuid.uuid4()) for _ in range(n)]  # the caller's data: made before the baseline
    tasks_idle = library_tasks()
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    tasks = await _spawn_all(spawn, ids, settled)
    register = time.perf_counter() - started
    gc.collect()
    rss = rss_bytes() - before
    tasks_busy = library_tasks(set(tasks))
    await _cancel(tasks)
    futures.clear()
    leftover = len(waiting.registry) + len(waiting.scheduler) + len(session._deadlines)

    ids = [str(uuid.uuid4()) for _ in range(n)]
    gc.collect()
    tracemalloc.start()
    snapshot = tracemalloc.take_snapshot()
    tasks = await _spawn_all(spawn, ids, settled)
    gc.collect()
    diff = tracemalloc.take_snapshot().compare_to(snapshot, "filename")
    tracemalloc.stop()
    await _cancel(tasks)
    traced = sum(stat.size_diff for stat in diff)
    own = sum(stat.size_diff for stat in diff if "/workflows_async/" in stat.traceback[0].filename)
    await session.close()

    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"unknown command {command!r}")

    yield (
        {
            "rss_per_wait": rss / n,
            "traced_per_wait": traced / n,
            "library_per_wait": own / n,
            "register_us": register / n * 1e6,
            "tasks_idle": tasks_idle,
            "tasks_busy": tasks_busy,
            "leftover": leftover,
        },
        handle,
    )
