"""Minimal HTTP/1.1 pieces that cost next to nothing, so the thing measured is the other side.

- ``fixed_server`` (a helper-process role): answers every request with one fixed JSON body.
  It stands in for the API when the client's own cost is measured.
- ``RawConnection``: a keep-alive connection that sends pre-built request bytes and reads the
  answer. It is the load generator when a server's cost is measured.

Invariants: both speak only what they need (no chunked bodies, no pipelining); a malformed or
unexpected answer raises instead of being counted as a success.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

from _proc import Ready

__all__ = ["RawConnection", "fixed_server", "request_bytes"]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


class _FixedResponder(asyncio.Protocol):
    """Answers each complete request on the connection with the same bytes."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            total = end + 4 + _content_length(self._buffer[:end])
            if len(self._buffer) < total:
                return
            self._buffer = self._buffer[total:]
            assert self._transport is not None
            self._transport.write(self._response)


@asynccontextmanager
async def fixed_server(config: dict[str, Any]) -> AsyncIterator[Ready]:
    """Role ``fixed``: serve ``config["body"]`` (JSON text) as a 200 to every request."""
    body = config["body"].encode()
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FixedResponder(response), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def handle(command: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(f"unknown command {command!r}")

    try:
        yield {"url": f"http://127.0.0.1:{port}"}, handle
    finally:
        server.close()
        await server.wait_closed()


def request_bytes(
    method: str, host: str, path: str, body: bytes = b"", headers: Mapping[str, str] = {}
) -> bytes:
    """A complete HTTP/1.1 request, ready to write to a socket."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RawConnection:
    """One keep-alive connection; ``send`` writes a request and returns the answer's status."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            raise ConnectionError(f"not an HTTP/1.1 answer: {head[:40]!r}")
        await self._reader.readexactly(_content_length(head))
        return int(head[9:12])

    async def close(self) -> None:
        self._writer.close()
        with suppress(OSError):
            await self._writer.wait_closed()
