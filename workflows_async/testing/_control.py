"""The Simulator's control endpoint: finish a workflow or change faults while it is served.

Invariants: every route lives under ``/_control/``, a prefix no API path starts with, and gets
no injected fault, latency or token check; only a loopback peer is served (403 otherwise) and
only a JSON body (415 otherwise: a web page cannot send one without a CORS preflight, which is
never answered); a faults patch is checked whole before any knob changes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._faults import Faults
from ._wire import Reject, decode_object, encode

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ["CONTROL_PREFIX", "add_control_routes", "faults_json", "patched_faults"]

CONTROL_PREFIX = "/_control/"
_SIMULATOR = web.AppKey("workflows_simulator_control", object)
_STATUS = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_FIELDS = {field.name: field for field in dataclasses.fields(Faults)}


def add_control_routes(app: web.Application, sim: Simulator) -> None:
    app[_SIMULATOR] = sim
    app.router.add_get("/_control/faults", _get_faults, allow_head=False)
    app.router.add_post("/_control/faults", _patch_faults)
    app.router.add_post("/_control/workflows/{id}/complete", _complete)


def faults_json(faults: Faults) -> dict[str, Any]:
    return {name: getattr(faults, name) for name in _FIELDS}


def patched_faults(faults: Faults, patch: dict[str, Any]) -> Faults:
    """A copy of ``faults`` with ``patch`` applied (JSON lists become tuples); ValueError."""
    changes: dict[str, Any] = {}
    for name, value in patch.items():
        if name not in _FIELDS:
            raise ValueError(f"unknown fault {name!r}")
        changes[name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(faults, **changes)


def _sim(request: web.Request) -> Simulator:
    peer = request.remote or ""
    try:
        local = ipaddress.ip_address(peer.split("%")[0]).is_loopback
    except ValueError:
        local = False
    if not local:
        raise Reject(403, "the control endpoint serves localhost only")
    return request.app[_SIMULATOR]  # type: ignore[return-value]


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise Reject(415, "send a JSON body (Content-Type: application/json)")
    return decode_object(await request.read())


def _json(data: dict[str, Any]) -> web.Response:
    return web.Response(body=encode(data), content_type="application/json")


async def _get_faults(request: web.Request) -> web.StreamResponse:
    return _json(faults_json(_sim(request).faults))


async def _patch_faults(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    patch = await _body(request)
    try:
        new = patched_faults(sim.faults, patch)
    except (ValueError, TypeError) as exc:
        raise Reject(400, str(exc)) from None
    for name in patch:  # the live object: whoever holds it sees the change
        setattr(sim.faults, name, getattr(new, name))
    return _json(faults_json(sim.faults))


async def _complete(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    body = await _body(request) if request.can_read_body else {}
    status = body.get("status", "COMPLETED")
    if not isinstance(status, str) or not _STATUS.fullmatch(status):
        raise Reject(400, "status must be a status name such as COMPLETED or FAILED")
    workflow_id = request.match_info["id"]
    try:
        sim._finish(workflow_id, status)  # a part of the Simulator
    except KeyError:
        raise Reject(404, "no such workflow") from None
    return _json({"id": workflow_id, "status": sim.workflow_status(workflow_id)})
