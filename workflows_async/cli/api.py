"""``run``, ``status``, ``result`` and ``wait``: single API calls with JSON on stdout.

Invariants: stdout carries only the JSON answer, messages go to stderr; the exit code tells the
outcome (0 completed, 3 failure status, 4 timeout); a timeout names the workflow id and the
``wait`` command that picks it up again.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._deadlines import DEFAULT_WAIT_TIMEOUT
from ..errors import WorkflowTimeout
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    PROG,
    CliParser,
    UsageError,
    add_api_arguments,
    add_poll_arguments,
    load_json_object,
    make_session,
    outcome_json,
    poll_policy,
    positive_float,
    print_json,
    warn,
    workflow_json,
)
from .rows import CASE_FIELDS, RowError, case_fields

if TYPE_CHECKING:
    from ..models import WorkflowOutcome


def add_parsers(commands: Any, parent: argparse.ArgumentParser) -> None:
    run: CliParser = commands.add_parser(
        "run",
        parents=[parent],
        help="create a case, run a workflow for it and wait for the result",
        description=(
            "Create a case (from --first-name etc. or --case-file), run workflow definition "
            "--definition for it and wait for its result, printed as JSON. Exit status: 0 "
            "completed, 3 a failure status, 4 timed out, 2 usage error, 1 other error."
        ),
    )
    run.add_argument("--definition", required=True, metavar="ID", help="workflow definition id")
    case = run.add_argument_group(
        "the case (all optional)",
        "Personal data is safer in --case-file: a command line is visible to other local "
        "users and kept in shell history.",
    )
    for field in CASE_FIELDS:
        case.add_argument(f"--{field.replace('_', '-')}", dest=field, metavar="TEXT")
    case.add_argument(
        "--case-file", type=Path, metavar="FILE",
        help="a JSON object with the case fields (camelCase or snake_case)",
    )  # fmt: skip
    case.add_argument("--case-id", metavar="ID", help="use an existing case instead")
    run.add_argument(
        "--record-id", metavar="ID",
        help="with --api-version 2: run for this record (records replace cases; optional)",
    )  # fmt: skip
    run.add_argument(
        "--parameters", metavar="JSON|@FILE", help="parameters for the workflow (a JSON object)"
    )
    run.add_argument("--no-wait", action="store_true", help="print the run response and exit")
    _timeout(run)
    add_api_arguments(run)
    add_poll_arguments(run)
    run.set_defaults(func=run_command)

    for name, help_text, func in (
        ("status", "print a workflow's current status as JSON", status_command),
        ("result", "print a finished workflow's result as JSON", result_command),
        ("wait", "wait for a workflow started earlier and print its result", wait_command),
    ):
        sub: CliParser = commands.add_parser(
            name,
            parents=[parent],
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
        )
        sub.add_argument("workflow_id", metavar="ID", help="the workflow id")
        if name == "wait":
            _timeout(sub)
        add_api_arguments(sub)
        if name == "wait":
            add_poll_arguments(sub)
        sub.set_defaults(func=func)


def _timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=positive_float, default=DEFAULT_WAIT_TIMEOUT, metavar="S",
        help="seconds to wait for the workflow (default: %(default)s)",
    )  # fmt: skip


def _case(args: argparse.Namespace) -> dict[str, str]:
    flags = {field: value for field in CASE_FIELDS if (value := getattr(args, field))}
    if args.case_file is None:
        return flags
    if args.case_id:
        raise UsageError("pass --case-file or --case-id, not both")
    data = load_json_object(f"@{args.case_file}", "--case-file")
    try:
        from_file = case_fields(data)
    except RowError as exc:
        raise UsageError(f"--case-file {args.case_file}: {exc}") from None
    return {**from_file, **flags}


def _finish(outcome: WorkflowOutcome) -> int:
    print_json(outcome_json(outcome))
    if outcome.succeeded:
        return EXIT_OK
    warn(f"workflow {outcome.workflow.id} ended with status {outcome.workflow.status}")
    return EXIT_FAILED


def _timed_out(exc: WorkflowTimeout, timeout: float, what: str = "the run request") -> int:
    if exc.workflow_id:
        warn(
            f"error: workflow {exc.workflow_id} did not finish within {timeout:g} s; "
            f"pick it up later with: {PROG} wait {exc.workflow_id}"
        )
    else:
        warn(f"error: timed out after {timeout:g} s before the API answered {what}")
    return EXIT_TIMEOUT


def run_command(args: argparse.Namespace) -> int:
    case = _case(args)
    if args.case_id and case:
        raise UsageError("pass case fields or --case-id, not both")
    parameters = load_json_object(args.parameters, "--parameters") if args.parameters else None
    started: list[str] = []
    try:
        return asyncio.run(_run(args, case, parameters, started))
    except KeyboardInterrupt:
        if started:
            return interrupted(started[0])
        warn(
            "interrupted before the API answered the run request: the workflow may have "
            "started; do not rerun blindly: see README Failure semantics"
        )
        return EXIT_INTERRUPTED


def interrupted(workflow_id: str) -> int:
    """Ctrl-C while waiting: the workflow goes on at the API; say how to pick it up."""
    warn(
        f"interrupted: workflow {workflow_id} goes on at the API; "
        f"pick it up with: {PROG} wait {workflow_id}"
    )
    return EXIT_INTERRUPTED


async def _run(
    args: argparse.Namespace,
    case: dict[str, str],
    parameters: dict[str, Any] | None,
    started: list[str],
) -> int:
    async with make_session(args, poll=poll_policy(args)) as session:
        case_id: str | None = None
        if (session.api_version or 1) >= 2:
            if case or args.case_id or args.case_file:
                raise UsageError(
                    "API version 2 runs a workflow for a record (--record-id), not a case"
                )
        elif args.record_id:
            raise UsageError("--record-id needs --api-version 2 (version 1 runs cases)")
        else:
            case_id = args.case_id or (await session.create_case(**case)).id
        if args.no_wait:
            parameters_id = None
            if parameters is not None:
                parameters_id = (await session.create_parameters(args.definition, parameters)).id
            workflow = await session.run_workflow(
                case_id, args.definition, record_id=args.record_id, parameters_id=parameters_id
            )
            print_json(workflow_json(workflow))
            return EXIT_OK
        try:
            outcome = await session.run_and_wait(
                case_id,
                args.definition,
                record_id=args.record_id,
                parameters=parameters,
                timeout=args.timeout,
                raise_on_failure=False,
                on_started=lambda workflow: started.append(workflow.id),
            )
        except WorkflowTimeout as exc:
            return _timed_out(exc, args.timeout)
        return _finish(outcome)


def status_command(args: argparse.Namespace) -> int:
    async def status() -> int:
        async with make_session(args) as session:
            print_json(workflow_json(await session.get_workflow(args.workflow_id)))
        return EXIT_OK

    return asyncio.run(status())


def result_command(args: argparse.Namespace) -> int:
    async def result() -> int:
        async with make_session(args) as session:
            print_json((await session.get_result(args.workflow_id)).data)
        return EXIT_OK

    return asyncio.run(result())


def wait_command(args: argparse.Namespace) -> int:
    async def wait() -> int:
        async with make_session(args, poll=poll_policy(args)) as session:
            try:
                outcome = await session.wait(
                    args.workflow_id, timeout=args.timeout, raise_on_failure=False
                )
            except WorkflowTimeout as exc:
                return _timed_out(exc, args.timeout)
            return _finish(outcome)

    try:
        return asyncio.run(wait())
    except KeyboardInterrupt:
        return interrupted(args.workflow_id)
