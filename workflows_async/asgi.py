"""The webhook receiver as a plain ASGI 3 app, for FastAPI, Starlette, Quart, Litestar or
Django's ASGI router: ``app.mount("/webhooks", session.webhook_asgi())``. No framework import.

Invariants: every HTTP request goes through :meth:`WebhookCore.receive` (same answers as the
aiohttp sub-app); the body is pulled from ``receive()`` only after the core has accepted the
method, the Content-Length and the signature header, and under the core's size limit and read
deadline; ``http.disconnect`` before the body is complete ends the read (400, nothing sent
can reach anyone); lifespan messages are answered (nothing to start: the Session is the
caller's); a websocket is refused; any other scope type is a :class:`ConfigurationError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from .errors import ConfigurationError
from .webhooks import BodyReadError, WebhookCore

__all__ = ["WebhookASGIApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class WebhookASGIApp:
    """An ASGI 3 application over a :class:`WebhookCore` (``Session.webhook_asgi()``).

    It answers the platform's POST at the mount point whatever the path below it (``/webhooks``
    and ``/webhooks/`` alike).
    """

    def __init__(self, core: WebhookCore) -> None:
        self.core = core

    async def __call__(
        self, scope: Scope, receive: Receive | None = None, send: Send | None = None
    ) -> None:
        if receive is None or send is None or not isinstance(scope, MutableMapping):
            # e.g. given to aiohttp as a handler: handler(request)
            raise ConfigurationError(
                "session.webhook_asgi() is an ASGI app (FastAPI, Starlette, Django ASGI); "
                "for aiohttp use app.add_subapp('/webhooks', session.webhook_app())"
            )
        kind = scope.get("type")
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})
        else:
            raise ConfigurationError(f"the webhook ASGI app serves HTTP only, not {kind!r}")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }  # ASGI names are lower-case; a repeated header keeps its last value
        answer = await self.core.receive(scope.get("method", ""), headers, _body(receive))
        body = answer.body
        response_headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in answer.headers.items()
        ]
        response_headers.append((b"content-length", str(len(body)).encode()))
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": response_headers}
        )
        await send({"type": "http.response.body", "body": body})

    # aiohttp looks for these when the app is handed to add_subapp: fail loudly there.
    @property
    def frozen(self) -> bool:
        raise ConfigurationError(
            "session.webhook_asgi() is an ASGI app; for aiohttp use "
            "app.add_subapp('/webhooks', session.webhook_app())"
        )


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "http.disconnect":
            raise BodyReadError("the client went away before the body was complete")
        if kind != "http.request":
            continue
        chunk = message.get("body", b"")
        if chunk:
            yield bytes(chunk)
        if not message.get("more_body", False):
            return


async def _lifespan(receive: Receive, send: Send) -> None:
    """Served as the root app (``uvicorn module:app``): nothing to start or stop here."""
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
