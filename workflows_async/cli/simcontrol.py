"""``sim-control``: change a running ``workflows-async simulate`` through its control endpoint.

Invariants: talks only to a local URL (the endpoint serves loopback peers only anyway); prints
the endpoint's JSON answer on stdout; an error is one line and exit 1 (2 for usage).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from .. import _env
from .._urls import is_local_url
from .common import EXIT_ERROR, EXIT_OK, CliParser, UsageError, print_json, warn


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser: CliParser = commands.add_parser(
        "sim-control",
        parents=[parent],
        help="finish a workflow or change faults of a running 'simulate'",
        description=(
            "Talk to the control endpoint of a running 'workflows-async simulate' (local only). "
            "'complete ID [--status FAILED]' ends a workflow now (its webhook follows); "
            "'faults' prints the fault knobs, 'faults NAME=VALUE ...' changes them (VALUE is "
            "JSON: 0.5, true, [500,502]; names as in Faults, e.g. error_rate)."
        ),
    )
    parser.add_argument("action", choices=("complete", "faults"), help="what to do")
    parser.add_argument("items", nargs="*", metavar="ARG", help="ID, or NAME=VALUE pairs")
    parser.add_argument(
        "--status", default="COMPLETED", help="complete: the final status (default: COMPLETED)"
    )
    parser.add_argument(
        "--url", metavar="URL",
        help=f"the Simulator's base URL (default: {_env.BASE_URL})",
    )  # fmt: skip
    parser.set_defaults(func=command)


def parse_patch(items: list[str]) -> dict[str, Any]:
    """``["error_rate=0.5", "out_of_order=true"]`` -> ``{"error_rate": 0.5, ...}``."""
    patch: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UsageError(f"expected NAME=VALUE, got {item!r}")
        try:
            patch[name.strip().replace("-", "_")] = json.loads(text)
        except json.JSONDecodeError:
            raise UsageError(f"{name}: the value is not JSON (e.g. 0.5, true, [500,502])") from None
    return patch


def command(args: argparse.Namespace) -> int:
    url = (args.url or _env.base_url(os.environ)).rstrip("/")
    if not url:
        raise UsageError(f"no Simulator URL: pass --url or set {_env.BASE_URL}")
    if not is_local_url(url):
        raise UsageError("--url must be a local Simulator (http://127.0.0.1:PORT)")
    if args.action == "complete":
        if len(args.items) != 1:
            raise UsageError("complete takes one workflow id")
        path, method = f"/_control/workflows/{args.items[0]}/complete", "POST"
        body: dict[str, Any] | None = {"status": args.status}
    elif args.items:
        path, method, body = "/_control/faults", "POST", parse_patch(args.items)
    else:
        path, method, body = "/_control/faults", "GET", None
    return asyncio.run(_call(url, method, path, body))


async def _call(url: str, method: str, path: str, body: dict[str, Any] | None) -> int:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.request(method, url + path, json=body) as response,
        ):
            raw = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        warn(f"error: cannot reach the Simulator at {url} ({type(exc).__name__}); is it running?")
        return EXIT_ERROR
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if response.status >= 300 or not isinstance(data, dict):
        reason = data.get("message", "") if isinstance(data, dict) else ""
        code = data.get("error", "") if isinstance(data, dict) else ""
        warn(f"error: {method} {path} answered {response.status} {code}: {reason}".rstrip(": "))
        return EXIT_ERROR
    print_json(data)
    return EXIT_OK
