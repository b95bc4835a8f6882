"""The HTTP face of the Simulator: routes, strict request checks, injected faults, the request log.

Invariants: every response carries ``X-Request-Id`` and every error body is the JSON object
``{"error", "message"}``; exactly one `RequestRecord` is logged per request; an injected error
(unless ``error_after_effect``) is answered before the call can change any state; a fault
scheduled with `Backend.fail_next` fires exactly once, before any random fault, drawing no dice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import hdrs, web

from . import _executions, _records_api
from ._faults import Dice, Faults
from ._org_tokens import OrgTokenStore, authenticate, require
from ._records import Fault, RequestRecord
from ._request_keys import PRINCIPAL, VERSION
from ._signing import KeyRing
from ._state import SimState
from ._tokens import TokenStore
from ._webhooks import WebhookDispatcher
from ._wire import (
    Reject,
    check_fields,
    decode_object,
    encode,
    error_body,
    negotiate_version,
    required_str,
)

__all__ = ["BACKEND", "KEY_ROUTE", "Backend", "ScheduledFault", "build_app"]

_log = logging.getLogger(__name__)
KEY_ROUTE = "GET /auth/webhooks/key/{kid}"
_TOKEN_ERRORS = frozenset({"missing_token", "invalid_token", "token_expired"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """One error answer waiting for the next request to its route (see `Backend.fail_next`)."""

    status: int
    after_effect: bool


@dataclass(slots=True)
class Backend:
    """Everything the HTTP layer needs from the Simulator, and nothing more."""

    state: SimState
    tokens: TokenStore
    keys: KeyRing
    dice: Dice
    faults: Callable[[], Faults]
    dispatcher: WebhookDispatcher
    advance: Callable[[], None]
    """Apply the transitions that are due, announcing each (reads call it to be exact)."""
    scheduled: Callable[[float], None]
    """Tell the scheduler a transition is due at this ``time.monotonic()`` time."""
    requests: list[RequestRecord]
    calls_by_route: Counter[str]
    org_tokens: OrgTokenStore = field(default_factory=OrgTokenStore)
    tables: _records_api.RecordTables = field(default_factory=_records_api.RecordTables)
    scheduled_faults: dict[str, deque[ScheduledFault]] = field(default_factory=dict)
    """``"METHOD /path"`` (a route template or an exact path) -> faults, first one next."""

    next_revocation: float | None = None
    """When ``Faults.revoke_tokens_every`` revokes every token next (``time.monotonic()``)."""

    def revocation_due(self, mean: float) -> bool:
        """True when the random revocation timer has run out (then it is set again)."""
        now = time.monotonic()
        due = self.next_revocation is not None and now >= self.next_revocation
        if due or self.next_revocation is None:
            self.next_revocation = now + self.dice.gap(mean)
        return due

    def fail_next(self, method: str, path: str, fault: ScheduledFault) -> None:
        self.scheduled_faults.setdefault(f"{method.upper()} {path}", deque()).append(fault)

    def take_fault(self, route: str, exact: str) -> ScheduledFault | None:
        for key in (exact, route):
            queue = self.scheduled_faults.get(key)
            if queue:
                fault = queue.popleft()
                if not queue:
                    del self.scheduled_faults[key]
                return fault
        return None


BACKEND = web.AppKey("workflows_simulator_backend", Backend)
"""The request key under which the middleware keeps the negotiated API version."""


def build_app(
    backend: Backend,
    lifecycle: Callable[[web.Application], AsyncIterator[None]],
    on_shutdown: Callable[[web.Application], Awaitable[None]],
) -> web.Application:
    """The aiohttp application; ``lifecycle`` runs the background work while it is served."""
    app = web.Application(middlewares=[_middleware])
    app[BACKEND] = backend
    app.router.add_post("/auth/authorize", _authorize)
    app.router.add_post("/auth/refresh", _refresh)
    app.router.add_get("/auth/webhooks/key/{kid}", _key, allow_head=False)
    app.router.add_post("/cases", _create_case)
    app.router.add_post("/parameters", _create_parameters)
    app.router.add_post("/workflows/run", _run)
    app.router.add_get("/workflows/{id}", _workflow, allow_head=False)
    app.router.add_get("/workflows/{id}/result", _result, allow_head=False)
    _records_api.add_routes(app, lambda request: request.app[BACKEND].tables, _json)
    _executions.add_routes(app, lambda request: request.app[BACKEND], _json)
    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    return app


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    backend = request.app[BACKEND]
    wall, started, request_id = time.time(), time.monotonic(), str(uuid.uuid4())
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else "<unmatched>"
    route = f"{request.method} {template}"
    backend.calls_by_route[route] += 1
    faults, dice = backend.faults(), backend.dice
    is_control = template.startswith("/_control/")  # no fault, latency or token check
    is_api = resource is not None and route != KEY_ROUTE and not is_control
    version: int | None = None
    fault: Fault | None = None
    try:
        if faults.latency > 0 and not is_control:
            await asyncio.sleep(faults.latency)
        if not is_api:
            if route == KEY_ROUTE and dice.chance(faults.key_error_rate):
                fault = "key_error"
                raise _injected(503, faults)
            response = await handler(request)
        else:
            version = request[VERSION] = negotiate_version(request.headers.get(hdrs.ACCEPT))
            injected, after_effect = _pick_fault(backend, route, f"{request.method} {request.path}")
            if injected and not after_effect:
                fault = "error"
                raise _injected(injected, faults)
            if not template.startswith("/auth/"):
                every = faults.revoke_tokens_every
                if dice.chance(faults.revoke_tokens_rate) or (
                    every > 0 and backend.revocation_due(every)
                ):
                    backend.tokens.revoke()
                    fault = "tokens_revoked"
                request[PRINCIPAL] = authenticate(
                    request.headers.get(hdrs.AUTHORIZATION), backend.tokens, backend.org_tokens
                )
            response = await handler(request)
            if injected:  # the call took effect; its answer is lost
                fault = "error_after_effect"
                raise _injected(injected, faults)
    except Reject as reject:
        response = _error(reject)
    except web.HTTPException as exc:  # aiohttp's own: no route, wrong method, body too large
        allow = exc.headers.get(hdrs.ALLOW)
        response = _error(
            Reject(exc.status, exc.reason, headers={"Allow": allow} if allow else None)
        )
    except Exception:  # a bug in the Simulator: still one JSON answer and one record
        _log.exception("simulator failed on %s", route)
        response = _error(Reject(500, "the simulator failed; see its log"))
    response.headers["X-Request-Id"] = request_id
    if is_api and fault is None and dice.chance(faults.disconnect_rate):
        fault = "disconnect"
        response = await _cut(request, response)
    record = RequestRecord(
        method=request.method,
        path=request.path,
        route=route,
        status=response.status,
        api_version=version,
        time=wall,
        duration=time.monotonic() - started,
        request_id=request_id,
        fault=fault,
    )
    backend.requests.append(record)
    return response


def _pick_fault(backend: Backend, route: str, exact: str) -> tuple[int, bool]:
    """The injected error status for this call (0: none) and whether it comes after the effect."""
    scheduled = backend.take_fault(route, exact)
    if scheduled is not None:
        return scheduled.status, scheduled.after_effect
    faults, dice = backend.faults(), backend.dice
    if not dice.chance(faults.error_rate):
        return 0, False
    if faults.error_after_effect:
        return faults.error_after_effect_status, True
    statuses = faults.error_statuses
    if route.startswith("POST ") and faults.post_error_statuses is not None:
        statuses = faults.post_error_statuses
    return dice.pick(statuses), False


def _injected(status: int, faults: Faults) -> Reject:
    headers: dict[str, str] = {}
    if status in (429, 503):
        seconds = faults.retry_after
        headers[hdrs.RETRY_AFTER] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
    return Reject(status, "injected fault", headers=headers)


def _error(reject: Reject) -> web.Response:
    headers = dict(reject.headers)
    if reject.status == 401 and reject.error in _TOKEN_ERRORS:
        headers[hdrs.WWW_AUTHENTICATE] = f'Bearer error="{reject.error}"'
    body = error_body(reject.status, reject.message, reject.error, reject.extra)
    return web.Response(
        status=reject.status, body=body, content_type="application/json", headers=headers
    )


async def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Send the status line, the headers and half the body, then close the connection."""
    body = response.body if isinstance(response, web.Response) else None
    data = body if isinstance(body, bytes) else b""
    cut = web.StreamResponse(status=response.status, headers=response.headers)
    cut.content_length = max(len(data), 1)
    await cut.prepare(request)
    await cut.write(data[: len(data) // 2])
    if request.transport is not None:
        request.transport.close()
    return cut  # aiohttp's write_eof then meets the closed transport and gives up quietly


def _json_response(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, body=encode(data), content_type="application/json")


async def _json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise Reject(415, "Content-Type must be application/json")
    return decode_object(await request.read())


async def _authorize(request: web.Request) -> web.StreamResponse:
    backend, body = request.app[BACKEND], await _json(request)
    check_fields(body, ("key", "secret"))
    key, secret = required_str(body, "key"), required_str(body, "secret")
    tokens = backend.tokens.authorize(key, secret, expired=backend.faults().issue_expired_tokens)
    return _json_response(tokens)


async def _refresh(request: web.Request) -> web.StreamResponse:
    backend, body = request.app[BACKEND], await _json(request)
    check_fields(body, ("refreshToken",))
    token = required_str(body, "refreshToken")
    expired = backend.faults().issue_expired_tokens
    return _json_response(backend.tokens.refresh(token, expired=expired))


async def _key(request: web.Request) -> web.StreamResponse:
    if request.query.get("pem", "").lower() != "true":
        raise Reject(400, "only ?pem=true is supported")
    keys, kid = request.app[BACKEND].keys, request.match_info["kid"]
    pem = keys.pem(kid) if keys.published(kid) else None
    if pem is None:
        raise Reject(404, "unknown key id", error="key_not_found")
    return web.Response(text=pem, content_type="text/plain")


async def _create_case(request: web.Request) -> web.StreamResponse:
    backend, body = request.app[BACKEND], await _json(request)
    return _json_response(backend.state.create_case(body), status=201)


async def _create_parameters(request: web.Request) -> web.StreamResponse:
    backend, body = request.app[BACKEND], await _json(request)
    require(request, "can_run", str(body.get("workflowDefinitionId")))
    return _json_response(backend.state.create_parameters(body), status=201)


async def _run(request: web.Request) -> web.StreamResponse:
    backend, body = request.app[BACKEND], await _json(request)
    require(request, "can_run", str(body.get("workflowDefinitionId")))
    workflow, first, due = backend.state.run(
        body, version=request.get(VERSION, 1), records=backend.tables
    )
    if due is not None:
        backend.scheduled(due)
    if backend.faults().webhook_before_response:
        task = backend.dispatcher.submit(first)
        if task is not None:
            await asyncio.wait({task})
    elif first.final:
        backend.dispatcher.submit(first)  # its task starts after this response is written
    if backend.faults().run_response_delay > 0:
        await asyncio.sleep(backend.faults().run_response_delay)
    return _json_response(workflow, status=201)


async def _workflow(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND]
    require(request, "can_view_workspace")
    backend.advance()
    return _json_response(backend.state.get(request.match_info["id"], request.get(VERSION, 1)))


async def _result(request: web.Request) -> web.StreamResponse:
    backend = request.app[BACKEND]
    require(request, "can_view_workspace")
    backend.advance()
    delay = backend.faults().result_delay
    return _json_response(backend.state.result(request.match_info["id"], delay=delay))
