"""What every command shares: the one-line-error parser, API flags, Session construction, output.

Invariants: a usage problem is a :class:`UsageError` (exit 2), reported in one line by ``main``;
flags win over ``WORKFLOWS_*`` variables, which are read by the rules of ``_env`` (the ones
``Session.from_env`` follows) when flags are absent; a secret given as a flag is passed to the
Session and never echoed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from .. import _env

if TYPE_CHECKING:  # imported where used: parsing the command line needs none of them
    from ..models import Workflow, WorkflowOutcome
    from ..polling import PollPolicy
    from ..session import Session

PROG = "workflows-async"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """The command line or an input file cannot be used as given (exit code 2)."""


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block) and never exit by itself."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def warn(message: str, stream: TextIO | None = None) -> None:
    """One line on stderr, with the program's name in front."""
    print(f"{PROG}: {message}", file=stream or sys.stderr, flush=True)


# -- argument types ------------------------------------------------------------------------


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_float(text)


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {text!r}")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def port(text: str) -> int:
    value = count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return value


# -- API configuration ---------------------------------------------------------------------


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """``--base-url`` and friends; each falls back to its ``WORKFLOWS_*`` variable."""
    group = parser.add_argument_group(
        "API connection",
        f"Flags win over the variables {_env.BASE_URL}, {_env.ORG_TOKEN}, {_env.TOKEN}, "
        f"{_env.API_KEY}, {_env.API_SECRET} and {_env.API_VERSION}. An organization token "
        "(tot_...) is the recommended credential; key and secret are legacy.",
    )
    group.add_argument("--base-url", metavar="URL", help="the API's base URL (https://...)")
    group.add_argument(
        "--token", metavar="TOKEN",
        help="an organization token (tot_..., sent as it is) or a JWT access token "
        f"(sent as Bearer); prefer the variable {_env.ORG_TOKEN}",
    )  # fmt: skip
    group.add_argument("--api-key", metavar="KEY", help="legacy: API key (with --api-secret)")
    group.add_argument("--api-secret", metavar="SECRET", help="legacy: API secret")
    group.add_argument(
        "--api-version", metavar="N", type=int,
        help="API version (Accept header); 2 runs workflows for records instead of cases",
    )  # fmt: skip
    group.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow a plain http:// base URL (a local Simulator only)",
    )
    group.add_argument(
        "--request-timeout", metavar="S", type=positive_float, default=30.0,
        help="seconds allowed for each HTTP request (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--retries", metavar="N", type=count, default=3,
        help="retries of a failed request (default: %(default)s)",
    )  # fmt: skip


def add_poll_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("polling (the CLI has no webhook receiver, so it polls)")
    group.add_argument(
        "--poll-initial", metavar="S", type=positive_float, default=1.0,
        help="seconds before the first poll (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--poll-max", metavar="S", type=positive_float, default=15.0,
        help="longest interval between polls (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--poll-rate", metavar="N", type=positive_float, default=10.0,
        help="at most N polls per second in all (default: %(default)s)",
    )  # fmt: skip


def poll_policy(args: argparse.Namespace) -> PollPolicy:
    from ..polling import PollPolicy

    initial: float = args.poll_initial
    return PollPolicy(
        initial_delay=initial, max_interval=max(initial, args.poll_max), rate=args.poll_rate
    )


def _credentials_from_flags(args: argparse.Namespace) -> _env.Credentials | None:
    key, secret, token = args.api_key, args.api_secret, args.token
    if token and (key or secret):
        raise UsageError("pass --token or --api-key and --api-secret, not both")
    if key or secret:
        if not (key and secret):
            raise UsageError("pass both --api-key and --api-secret")
        return _env.Credentials("key_secret", key=key, secret=secret)
    if token:
        return _env.Credentials.for_token(token)
    return None


def base_url(args: argparse.Namespace) -> str:
    """``--base-url``, else ``WORKFLOWS_BASE_URL``, else ``""``."""
    url: str = args.base_url or _env.base_url(os.environ)
    return url


def make_session(args: argparse.Namespace, *, require_auth: bool = True, **options: Any) -> Session:
    """A Session from the API flags, falling back to the environment via ``Session.from_env``."""
    from .._retry import RetryPolicy
    from ..auth import auth_for
    from ..session import Session

    if not base_url(args):
        raise UsageError(f"no API URL: pass --base-url or set {_env.BASE_URL}")
    options["allow_insecure_http"] = args.insecure_http
    options["timeout"] = args.request_timeout
    options["retry"] = RetryPolicy(max_attempts=args.retries + 1)
    if args.api_version is not None:
        if args.api_version < 1:
            raise UsageError("--api-version must be a positive integer")
        options["api_version"] = args.api_version
    flags = _credentials_from_flags(args)
    if flags is not None:
        options["auth"] = auth_for(flags)
    elif _env.credentials(os.environ) is None:
        if require_auth:
            raise UsageError(
                f"no credentials: pass --token (an organization token, tot_...) or set "
                f"{_env.ORG_TOKEN}; legacy: --api-key and --api-secret, or "
                f"{_env.API_KEY} and {_env.API_SECRET} (or {_env.TOKEN})"
            )
        options["auth"] = None
    if args.base_url:
        options["base_url"] = args.base_url
    return Session.from_env(**options)


# -- input and output ----------------------------------------------------------------------


def load_json_object(text: str, what: str) -> dict[str, Any]:
    """A JSON object from ``text``, or from the file ``@path``; never echoes the content."""
    source = what
    if text.startswith("@"):
        path = Path(text[1:])
        source = f"{what} file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{source}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{source}: not UTF-8 text") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{source}: expected a JSON object")
    return value


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), flush=True)


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    data = {"id": workflow.id, "caseId": workflow.case_id, "status": workflow.status}
    if workflow.record_id is not None:
        data = {"id": workflow.id, "recordId": workflow.record_id, "status": workflow.status}
    return data


def outcome_json(outcome: WorkflowOutcome) -> dict[str, Any]:
    return {
        "workflowId": outcome.workflow.id,
        "caseId": outcome.workflow.case_id,
        **({"recordId": outcome.workflow.record_id} if outcome.workflow.record_id else {}),
        "status": outcome.workflow.status,
        "channel": str(outcome.channel),
        "elapsed": round(outcome.elapsed, 3),
        "result": outcome.result.data if outcome.result is not None else None,
    }
