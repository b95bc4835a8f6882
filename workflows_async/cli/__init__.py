"""The ``workflows-async`` command: ``demo``, ``run``, ``execute``, ``status``, ``result``,
``wait``, ``batch``, ``simulate``, ``listen`` and ``sim-control``. ``main`` lives here; each
module of this package holds one command (or what the commands share, in ``common``).

Invariants: ``main`` returns an exit code and never lets a traceback out: every error becomes
one line ``workflows-async: error: ...`` on stderr (2 usage, 3 failure status, 4 timeout,
1 anything else, 130 Ctrl-C); ``-v`` adds log lines, never secrets. No command calls
``sys.exit`` (each returns its exit code), so ``main`` stays the only place that maps errors,
and nothing in this package prints a secret or personal data. Importing the package loads no
aiohttp, cryptography or Session: ``--version``, ``--help`` and usage errors stay cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from .._version import __version__
from ..errors import ConfigurationError, WorkflowFailed, WorkflowsError, WorkflowTimeout
from . import api, batch, demo, execute, servers, simcontrol
from .common import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    PROG,
    CliParser,
    UsageError,
    warn,
)

__all__ = ["build_parser", "main"]


def build_parser() -> CliParser:
    parser = CliParser(
        prog=PROG,
        description="Run workflows of the Workflows (identity/KYC) API, or try it all locally.",
        epilog=f"'{PROG} demo' shows run_and_wait against the built-in Simulator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    # Sub-commands take -v too; SUPPRESS keeps a top-level -v from being reset to a default.
    common = CliParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    demo.add_parser(commands, common)
    api.add_parsers(commands, common)
    execute.add_parser(commands, common)
    batch.add_parser(commands, common)
    servers.add_parsers(commands, common)
    simcontrol.add_parser(commands, common)
    for sub in commands.choices.values():
        sub.set_defaults(command_prog=sub.prog)
    return parser


@contextlib.contextmanager
def _logging(verbosity: int) -> Iterator[None]:
    """Library log lines go to stderr while a command runs; the logger is restored after."""
    logger = logging.getLogger("workflows_async")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(
        logging.DEBUG if verbosity > 1 else logging.INFO if verbosity else logging.WARNING
    )
    try:
        yield
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def _error(message: str, code: int) -> int:
    text = " ".join(message.split()) or "unknown error"
    warn(f"error: {text}")
    return code


def _os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            prog = getattr(args, "command_prog", PROG)
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{prog} --help')")
    except UsageError as exc:
        return _error(str(exc), EXIT_USAGE)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    if getattr(args, "func", None) is None:
        return _error(f"choose a command (see '{PROG} --help')", EXIT_USAGE)
    verbosity: int = args.verbose
    with _logging(verbosity):
        return _run(args, verbosity)


def _run(args: argparse.Namespace, verbosity: int) -> int:
    # Imported here, not at the top: ``--help``, ``--version`` and usage errors never load it.
    import aiohttp

    from .hints import explain

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        warn("interrupted")
        return EXIT_INTERRUPTED
    except (UsageError, ConfigurationError) as exc:
        return _error(explain(exc, args), EXIT_USAGE)
    except WorkflowFailed as exc:
        return _error(str(exc), EXIT_FAILED)
    except WorkflowTimeout as exc:
        return _error(str(exc), EXIT_TIMEOUT)
    except WorkflowsError as exc:
        return _error(explain(exc, args), EXIT_ERROR)
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        return _error(_os_error(exc), EXIT_ERROR)
    except aiohttp.ClientError as exc:
        return _error(f"network error: {type(exc).__name__}: {exc}", EXIT_ERROR)
    except ValueError as exc:
        return _error(str(exc), EXIT_USAGE)
    except Exception as exc:  # the promise: one line, never a traceback
        if verbosity:
            logging.getLogger("workflows_async").exception("internal error")
        return _error(f"internal error ({type(exc).__name__}): {exc}", EXIT_ERROR)
