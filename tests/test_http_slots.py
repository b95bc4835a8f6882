"""The request path's connection slots (``_http._Slots``): at most ``limit`` requests hold one,
the others wait in line, and neither a waiter nor a request that is cancelled loses a slot."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import workflows_async as wa
from workflows_async._http import _Slots


async def test_waiters_are_served_in_the_order_they_came() -> None:
    slots = _Slots(1)
    assert slots.take_now()
    served: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        served.append(name)

    first = asyncio.create_task(wait("first"))
    second = asyncio.create_task(wait("second"))
    await asyncio.sleep(0)  # both in line
    slots.give()
    assert not slots.take_now()  # the slot went to the line, not to a newcomer
    await first
    slots.give()
    await second
    assert served == ["first", "second"]
    slots.give()
    assert slots.take_now() and not slots.take_now()


async def test_a_waiter_cancelled_in_line_leaves_it() -> None:
    slots = _Slots(1)
    assert slots.take_now()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not slots._waiting  # the line does not grow with waiters that gave up
    slots.give()
    assert slots.take_now() and not slots.take_now()


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_ran_goes_to_the_next() -> None:
    slots = _Slots(1)
    assert slots.take_now()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give()  # handed to first, which has not run since
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(10):  # a hang guard, not a timing
        await second
    assert not slots.take_now()  # second holds the only slot
    slots.give()
    assert slots.take_now()


async def test_a_request_cancelled_while_it_holds_the_only_slot_gives_it_back() -> None:
    arrived, gate = asyncio.Event(), asyncio.Event()

    async def workflow(request: web.Request) -> web.Response:
        if request.match_info["id"] == "held":
            arrived.set()
            await gate.wait()
        return web.json_response({"id": request.match_info["id"], "status": "IN_PROGRESS"})

    app = web.Application()
    app.add_routes([web.get("/workflows/{id}", workflow)])
    async with (
        TestServer(app, host="127.0.0.1") as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http,
        wa.Session(
            str(server.make_url("")), wa.TokenAuth("t"), allow_insecure_http=True, http_session=http
        ) as session,
    ):
        held = asyncio.create_task(session.get_workflow("held"))
        async with asyncio.timeout(10):
            await arrived.wait()
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        gate.set()
        async with asyncio.timeout(10):  # a hang guard, not a timing
            workflow_ = await session.get_workflow("next")
    assert workflow_.id == "next"
