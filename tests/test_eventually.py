"""The tests' bounded wait (tests/eventually.py): sync and async predicates, a clear failure."""

from __future__ import annotations

import asyncio

import pytest
from eventually import eventually


async def test_returns_once_a_sync_predicate_holds() -> None:
    asked: list[int] = []

    def third_time() -> bool:
        asked.append(1)
        return len(asked) >= 3

    await eventually(third_time, "the third ask", interval=0)
    assert len(asked) == 3


async def test_awaits_an_async_predicate() -> None:
    flag = asyncio.Event()
    asyncio.get_running_loop().call_soon(flag.set)

    async def is_set() -> bool:
        await asyncio.sleep(0)
        return flag.is_set()

    await eventually(is_set, "the flag")


async def test_fails_naming_what_was_awaited() -> None:
    asked: list[int] = []
    with pytest.raises(AssertionError, match=r"after 0.05 s waiting for: the moon to turn blue"):
        await eventually(lambda: asked.append(1), "the moon to turn blue", timeout=0.05)
    assert len(asked) >= 2  # asked again at the deadline


async def test_an_error_in_the_predicate_ends_the_wait_at_once() -> None:
    def broken() -> bool:
        raise RuntimeError("the child exited")

    with pytest.raises(RuntimeError, match="child exited"):
        await eventually(broken, "never", timeout=60)
