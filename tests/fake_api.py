"""A scripted HTTP API on a real localhost socket, for request/response details of the client.

Invariants: answers are given in the order they were added for a (method, path), a ``repeat``
answer stays for every later request; every request is recorded as it arrived (raw body bytes,
headers); a request with no answer scripted gets 418, so a test sees it fail. Only 127.0.0.1.

It replaces aioresponses, which cannot build responses for aiohttp 3.14: the client is tested
against a real server, so redirects, disconnects and read timeouts are the real thing.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import functools
import json
import socket
import struct
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDictProxy

from workflows_async.testing import serve

__all__ = ["Call", "FakeAPI", "FirstConnectRefused", "first_connect_refused_session"]

Action = Literal["answer", "hang", "disconnect", "reset", "truncate"]


@dataclasses.dataclass(frozen=True)
class Call:
    """One request as the server received it."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclasses.dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]
    repeat: bool
    action: Action


class FakeAPI:
    """``async with FakeAPI() as api``: script answers with ``api.get``/``api.post``, point a
    client at ``api.base_url``, read what arrived with ``api.calls(method, path)``."""

    def __init__(self) -> None:
        self._replies: dict[tuple[str, str], list[_Reply]] = {}
        self.requests: list[Call] = []
        self._release = asyncio.Event()
        self._serving = contextlib.AsyncExitStack()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        payload: Any = None,
        body: str | bytes = b"",
        headers: Mapping[str, str] | None = None,
        repeat: bool = False,
        action: Action = "answer",
    ) -> None:
        """Script one answer: ``payload`` is sent as JSON, else ``body`` as it is. ``action``
        ``"hang"`` never answers (until close), ``"disconnect"`` drops the connection,
        ``"reset"`` drops it with a TCP reset, ``"truncate"`` sends the headers and half the
        body, then drops it."""
        all_headers = dict(headers or {})
        if payload is not None:
            body = json.dumps(payload)
            all_headers.setdefault("Content-Type", "application/json")
        raw = body.encode() if isinstance(body, str) else body
        reply = _Reply(status, raw, all_headers, repeat, action)
        self._replies.setdefault((method, path), []).append(reply)

    def get(self, path: str, **kwargs: Any) -> None:
        self.add("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> None:
        self.add("POST", path, **kwargs)

    def calls(self, method: str, path: str) -> list[Call]:
        return [c for c in self.requests if (c.method, c.path) == (method, path)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Call(request.method, request.path, request.headers, body))
        queue = self._replies.get((request.method, request.path), [])
        if not queue:
            return web.Response(status=418, text="no answer scripted")
        reply = queue[0] if queue[0].repeat else queue.pop(0)
        if reply.action == "hang":
            await self._release.wait()
        elif reply.action in ("disconnect", "reset"):
            assert request.transport is not None
            if reply.action == "reset":
                sock = request.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.transport.close()
        elif reply.action == "truncate":
            response = web.StreamResponse(status=reply.status, headers=reply.headers)
            response.content_length = len(reply.body) or 100
            await response.prepare(request)
            await response.write(reply.body[: len(reply.body) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    async def __aenter__(self) -> FakeAPI:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.port = (await self._serving.enter_async_context(serve(app))).port
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        await self._serving.aclose()


@functools.cache
def _never_listening() -> socket.socket:
    sock = socket.socket()  # no SO_REUSEADDR: no other socket can bind this port
    sock.bind(("127.0.0.1", 0))
    atexit.register(sock.close)
    return sock


def closed_port() -> int:
    """A localhost port that refuses connections: a socket of this process holds it, bound and
    never listening, for the whole run, so no other process can take it (a port that was free
    a moment ago could be taken by then)."""
    port: int = _never_listening().getsockname()[1]
    return port


class FirstConnectRefused(AbstractResolver):
    """Resolves every name to 127.0.0.1: the first ``refusals`` lookups to a closed port (so
    the connection is refused before anything is sent), later ones to ``port``; ``lookups``
    counts them (one per connection attempt)."""

    def __init__(self, port: int, refusals: int = 1) -> None:
        self._ports = [closed_port()] * refusals
        self._port = port
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        target = self._ports.pop() if self._ports else self._port
        result: ResolveResult = {
            "hostname": host,
            "host": "127.0.0.1",
            "port": target,
            "family": socket.AF_INET,
            "proto": 0,
            "flags": socket.AI_NUMERICHOST,
        }
        return [result]

    async def close(self) -> None:
        pass


def first_connect_refused_session(
    port: int, resolver: FirstConnectRefused | None = None
) -> aiohttp.ClientSession:
    """An aiohttp session whose first connection (or as many as ``resolver`` says) is refused
    and later ones reach ``port``."""
    resolver = resolver or FirstConnectRefused(port)
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector)
