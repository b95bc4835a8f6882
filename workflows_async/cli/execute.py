"""``workflows-async execute``: start an execution (``POST /workflows``) and wait for it.

Invariants: stdout carries only JSON (the outcome, or the execution with ``--no-wait``), with
the parameters left out and a UI execution's link shown only when asked for (``--show-link``),
never its token; exit codes as for ``run`` (0 completed, 3 failure status, 4 timeout).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import WorkflowTimeout
from .api import _finish, _timed_out, _timeout
from .common import (
    EXIT_OK,
    CliParser,
    add_api_arguments,
    add_poll_arguments,
    load_json_object,
    make_session,
    poll_policy,
    positive_float,
    print_json,
)

if TYPE_CHECKING:  # imported where used, so that parsing the command line stays cheap
    from ..executions import Execution


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser: CliParser = commands.add_parser(
        "execute",
        parents=[parent],
        help="start an execution of a workflow definition (POST /workflows) and wait for it",
        description=(
            "Start an execution of --definition with --locale and --parameters, then wait for "
            "its result (webhook-less: by polling) and print it as JSON. Exit status: 0 "
            "completed, 3 a failure status, 4 timed out, 2 usage error, 1 other error."
        ),
    )
    parser.add_argument("--definition", required=True, metavar="ID", help="workflow definition")
    parser.add_argument("--locale", required=True, metavar="LOCALE", help="e.g. en, sv")
    parser.add_argument(
        "--parameters", metavar="JSON|@FILE", default="{}",
        help="the execution's parameters, a JSON object (default: {})",
    )  # fmt: skip
    parser.add_argument("--record-id", metavar="ID", help="the record it is for (optional)")
    parser.add_argument(
        "--expires-in", metavar="HOURS", type=positive_float,
        help="expire the execution after HOURS (0.5 to 720)",
    )  # fmt: skip
    parser.add_argument("--no-wait", action="store_true", help="print the execution and exit")
    parser.add_argument(
        "--show-link", action="store_true", help="print a UI execution's link (not its token)"
    )
    _timeout(parser)
    add_api_arguments(parser)
    add_poll_arguments(parser)
    parser.set_defaults(func=command)


def execution_json(execution: Execution, *, show_link: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": execution.id,
        "workflowDefinitionId": execution.workflow_definition_id,
        "status": execution.status,
        "executionType": execution.execution_type,
        "locale": execution.locale,
        "expiresAt": execution.expires_at,
        "recordId": execution.record_id,
    }
    if show_link and execution.link:
        data["link"] = execution.link
    return {k: v for k, v in data.items() if v is not None}


def command(args: argparse.Namespace) -> int:
    parameters = load_json_object(args.parameters, "--parameters")
    return asyncio.run(_execute(args, parameters))


async def _execute(args: argparse.Namespace, parameters: dict[str, Any]) -> int:
    expires_at = None
    if args.expires_in is not None:
        expires_at = datetime.now(UTC) + timedelta(hours=args.expires_in)
    async with make_session(args, poll=poll_policy(args)) as session:
        options: dict[str, Any] = {
            "locale": args.locale,
            "parameters": parameters,
            "expires_at": expires_at,
            "record_id": args.record_id,
        }
        if args.no_wait:
            execution = await session.start_execution(args.definition, **options)
            print_json(execution_json(execution, show_link=args.show_link))
            return EXIT_OK
        try:
            outcome = await session.execute_and_wait(
                args.definition, timeout=args.timeout, raise_on_failure=False, **options
            )
        except WorkflowTimeout as exc:
            return _timed_out(exc, args.timeout, "the execution request")
        return _finish(outcome)
