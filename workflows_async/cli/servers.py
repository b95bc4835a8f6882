"""``simulate`` and ``listen``: long-running local servers that stop cleanly on Ctrl-C.

Invariants: both bind 127.0.0.1 unless told otherwise (and warn when told otherwise); Ctrl-C or
SIGTERM stops them with exit code 0 after closing every socket; ``listen`` prints one JSON line
per verified event on stdout and keeps its status messages on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import _env
from .._serve import serve
from .._urls import is_local_host, is_local_url
from .common import (
    EXIT_OK,
    CliParser,
    UsageError,
    add_api_arguments,
    base_url,
    make_session,
    non_negative_float,
    port,
    positive_float,
    share,
    warn,
)
from .forward import Forwarder, check_forward_url

if TYPE_CHECKING:  # imported where used, so that parsing the command line stays cheap
    from ..bus import Bus
    from ..events import WebhookEvent
    from ..session import Session
    from ..testing import Simulator


SIMULATE_LOG_LIMIT = 10_000
"""A standalone Simulator may run for days: keep only its newest request and webhook records."""


def add_parsers(commands: Any, parent: argparse.ArgumentParser) -> None:
    sim: CliParser = commands.add_parser(
        "simulate",
        parents=[parent],
        help="run the Simulator (a fake Workflows API) in the foreground",
        description=(
            "Serve the Simulator until Ctrl-C. It prints its base URL, key and secret (--json: "
            "one JSON line, with an organization token too); point a client at it with "
            "--insecure-http. Built-in definitions: kyc-basic, kyc-instant, kyc-awaiting, "
            "kyc-failing. While it runs, 'sim-control' (or POST /_control/..., from this "
            "machine only) completes or fails a workflow and changes faults."
        ),
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    sim.add_argument(
        "--port", type=port, default=8080, help="port (0: any free one; default: 8080)"
    )
    sim.add_argument(
        "--webhook-url", action="append", default=[], metavar="URL",
        help="send signed webhooks here (repeatable)",
    )  # fmt: skip
    sim.add_argument(
        "--time-scale", type=positive_float, default=1.0, metavar="X",
        help="multiply simulated durations by X (default: 1.0)",
    )  # fmt: skip
    sim.add_argument("--seed", type=int, help="seed for the fault dice")
    sim.add_argument("--key", default="test-key", help="the API key it accepts")
    sim.add_argument("--secret", default="test-secret", help="the API secret it accepts")
    sim.add_argument(
        "--json", action="store_true",
        help="print one JSON line on start-up (baseUrl, key, secret, organizationToken, "
        "webhookKeyId, controlUrl) instead of the text",
    )  # fmt: skip
    add_fault_arguments(
        sim.add_argument_group("faults (see Faults; change them later with sim-control)")
    )
    sim.set_defaults(func=simulate_command)

    listen: CliParser = commands.add_parser(
        "listen",
        parents=[parent],
        help="run a standalone webhook receiver that prints each verified event",
        description=(
            "Receive the platform's webhooks on http://HOST:PORT/PATH, verify their "
            "signatures with keys fetched from the API (no credentials needed), and print "
            "each verified event as one JSON line on stdout; --forward-to relays each one "
            "to a local app."
        ),
    )
    listen.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    listen.add_argument("--port", type=port, default=8081, help="port (0: any free one)")
    listen.add_argument("--path", default="/webhooks", help="URL path (default: /webhooks)")
    listen.add_argument(
        "--no-verify", action="store_true",
        help="accept unsigned webhooks (only with a local --base-url)",
    )  # fmt: skip
    listen.add_argument("--redis", metavar="URL", help="publish events to Redis (redis://...)")
    listen.add_argument("--raw", action="store_true", help="include each event's body")
    listen.add_argument(
        "--forward-to", metavar="URL",
        help="POST each verified event's raw body to URL (a local app), with the header "
        "Workflows-Signature-Verified: true instead of the signature",
    )  # fmt: skip
    listen.add_argument(
        "--forward-remote", action="store_true",
        help="allow a --forward-to URL that is not on this machine",
    )  # fmt: skip
    listen.add_argument(
        "--forward-timeout", type=positive_float, default=10.0, metavar="S",
        help="seconds each relay may take (default: 10)",
    )  # fmt: skip
    add_api_arguments(listen)
    listen.set_defaults(func=listen_command)


def statuses(text: str) -> tuple[int, ...]:
    """``"500,502"`` -> ``(500, 502)``."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected statuses such as 500,502: {text!r}") from None


_FAULT_HELP = {
    "error_rate": "share of API calls answered with one of --error-statuses",
    "latency": "seconds added before every answer",
    "drop_webhooks": "share of webhook events never delivered",
}


def add_fault_arguments(group: Any) -> None:
    """One flag per field of `Faults` (``--error-rate`` for ``error_rate``), none forgotten."""
    import dataclasses

    from ..testing._faults import _SECONDS, _SHARES, Faults

    for field in dataclasses.fields(Faults):
        flag, name = "--" + field.name.replace("_", "-"), field.name
        default = field.default
        options: dict[str, Any] = {"dest": f"fault_{name}", "default": argparse.SUPPRESS}
        if name in _SHARES:
            options.update(type=share, metavar="SHARE", help=_FAULT_HELP.get(name, "a share 0-1"))
        elif name in _SECONDS:
            options.update(
                type=non_negative_float, metavar="S", help=_FAULT_HELP.get(name, "seconds")
            )
        elif isinstance(default, bool):
            options.update(action="store_true")
        elif name.endswith("_statuses"):
            options.update(type=statuses, metavar="N,N", help="HTTP statuses, e.g. 500,502")
        elif isinstance(default, int):
            options.update(type=int, metavar="N", help="an HTTP status")
        else:  # a new kind of knob: still a flag, its value JSON
            options.update(type=json.loads, metavar="JSON")
        if "help" in options:
            options["help"] += f" (Faults.{name}; default: {default})"
        else:
            options["help"] = f"Faults.{name}"
        group.add_argument(flag, **options)


def faults_from_args(args: argparse.Namespace) -> dict[str, Any]:
    prefix = "fault_"
    return {k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix)}


async def _until_stopped() -> None:
    """Return on SIGINT or SIGTERM (or on KeyboardInterrupt when signals cannot be hooked)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def _check_host(host: str) -> None:
    if not is_local_host(host):
        warn(f"warning: listening on {host}, reachable from other machines")


def simulate_command(args: argparse.Namespace) -> int:
    from ..testing import Faults, Simulator

    try:
        faults = Faults(**faults_from_args(args))
        sim = Simulator(
            key=args.key, secret=args.secret, webhook_urls=args.webhook_url,
            time_scale=args.time_scale, host=args.host, port=args.port, seed=args.seed,
            faults=faults, log_limit=SIMULATE_LOG_LIMIT, control=True,
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_host(args.host)
    return asyncio.run(_simulate(sim, as_json=args.json))


async def _simulate(sim: Simulator, *, as_json: bool) -> int:
    async with sim:
        if as_json:
            start = {
                "baseUrl": sim.base_url,
                "key": sim.key,
                "secret": sim.secret,
                "organizationToken": sim.organization_token(),
                "webhookKeyId": sim.kid,
                "controlUrl": f"{sim.base_url}/_control/",
                "definitions": sorted(sim.definitions),
            }
            print(json.dumps(start), flush=True)
            await _until_stopped()
            warn("simulator stopped")
            return EXIT_OK
        lines = [
            f"Simulator listening on {sim.base_url}",
            f"key: {sim.key}",
            f"secret: {sim.secret}",
            f"definitions: {', '.join(sorted(sim.definitions))}",
            f"webhooks to: {', '.join(sim.webhook_urls) or '(none)'}",
            "",
            "Try it:",
            f"  export {_env.BASE_URL}={sim.base_url}",
            f"  export {_env.API_KEY}={sim.key} {_env.API_SECRET}={sim.secret}",
            "  workflows-async run --insecure-http --definition kyc-basic --company-name Acme",
            "  workflows-async sim-control complete WORKFLOW_ID --status FAILED",
            "  workflows-async sim-control faults error_rate=0.2",
            "",
            "Press Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)
        await _until_stopped()
    warn("simulator stopped")
    return EXIT_OK


def _bus(url: str | None) -> Bus | None:
    if url is None:
        return None
    from ..redis_bus import RedisBus  # without the redis package: ConfigurationError, exit 2

    return RedisBus(url)


def event_json(event: WebhookEvent, *, raw: bool) -> dict[str, Any]:
    record: dict[str, Any] = {
        "workflowId": event.workflow_id,
        "status": event.status,
        "caseId": event.case_id,
        "eventType": event.event_type,
        "eventId": event.event_id,
        "receivedAt": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    if raw:
        record["body"] = event.payload
    return record


def listen_command(args: argparse.Namespace) -> int:
    path = "/" + args.path.strip("/")
    if any(c in path for c in "?#{} "):
        raise UsageError("--path must be a plain URL path such as /webhooks")
    if args.no_verify and not is_local_url(base_url(args)):
        raise UsageError("--no-verify is only allowed with a local API (localhost --base-url)")
    forward_to = None
    if args.forward_to:
        forward_to = check_forward_url(args.forward_to, allow_remote=args.forward_remote)
    # No credentials needed: the signing-key endpoint is called without a token.
    session = make_session(
        args, require_auth=False, verify_webhooks=not args.no_verify, bus=_bus(args.redis),
    )  # fmt: skip
    _check_host(args.host)
    forwarder = None
    if forward_to is not None:
        forwarder = Forwarder(forward_to, verified=not args.no_verify, timeout=args.forward_timeout)
    return asyncio.run(
        _listen(session, args.host, args.port, path, raw=args.raw, forwarder=forwarder)
    )


async def _listen(
    session: Session,
    host: str,
    port_number: int,
    path: str,
    *,
    raw: bool,
    forwarder: Forwarder | None = None,
) -> int:
    from aiohttp import web

    def show(event: WebhookEvent) -> None:
        print(json.dumps(event_json(event, raw=raw)), flush=True)

    session.on_event(show)
    async with contextlib.AsyncExitStack() as stack:
        if forwarder is not None:
            await stack.enter_async_context(forwarder)
            session.on_event(forwarder.forward)
        await stack.enter_async_context(session)
        receiver = session.webhook_app()
        if path == "/":
            app = receiver
        else:
            app = web.Application()
            app.add_subapp(path, receiver)
        async with serve(app, host=host, port=port_number) as served:
            suffix = "/" if path == "/" else path
            warn(f"listening on {served.url}{suffix} (Ctrl-C to stop)")
            started = time.monotonic()
            await _until_stopped()
    warn(f"receiver stopped after {time.monotonic() - started:.0f} s")
    return EXIT_OK
