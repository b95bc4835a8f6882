"""Where the Simulator's middleware keeps per-request values for its handlers.

Invariant: on aiohttp 3.14 and newer the keys are ``web.RequestKey`` objects (a plain string
key there raises ``NotAppKeyWarning``, an error in a user's suite run with ``-W error``); on
older aiohttp, which has no ``RequestKey``, they are plain strings.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["PRINCIPAL", "VERSION"]


def _request_key(name: str, kind: type) -> Any:
    factory = getattr(web, "RequestKey", None)
    return name if factory is None else factory(name, kind)


VERSION = _request_key("workflows_simulator.version", int)
"""The API version the request's ``Accept`` header chose."""
PRINCIPAL = _request_key("workflows_simulator.principal", object)
"""The caller's ``Principal`` (see ``_org_tokens``)."""
