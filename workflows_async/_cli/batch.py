"""``workflows-async batch FILE``: one workflow per case row, a JSON line per finished row.

Invariants: each record is written and flushed the moment its row ends, so an interruption
loses nothing already written; records hold ids, statuses and the row's key, never case data;
a row whose key already has a finished record is skipped, and a row whose workflow had started
(interrupted, timed out, or failed after the run) is resumed by waiting for that workflow, never
run again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import (
    AuthenticationError,
    PermissionDeniedError,
    WorkflowsError,
    WorkflowTimeout,
)
from .common import (
    EXIT_ERROR,
    EXIT_OK,
    PROG,
    CliParser,
    UsageError,
    add_api_arguments,
    add_poll_arguments,
    make_session,
    poll_policy,
    positive_float,
)
from .rows import BadRow, Row, read_rows

if TYPE_CHECKING:
    from ..models import WorkflowOutcome
    from ..session import Session


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser: CliParser = commands.add_parser(
        "batch",
        parents=[parent],
        help="run one workflow per row of a CSV or JSON Lines file",
        description=(
            "Run one workflow per case row of FILE (CSV with a header row, or JSON Lines), "
            "at most --concurrency at once. Each finished row is appended to --output as one "
            "JSON line (line, caseKey, workflowId, status, channel, elapsed, error); a second "
            "run skips rows already finished there. Columns: case fields in camelCase or "
            "snake_case (firstName, last_name, companyName, ...), optionally externalId or id "
            "(used as the row's key; otherwise a hash of the row) and parameters (JSON object)."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the cases, CSV or JSON Lines")
    parser.add_argument("--definition", required=True, metavar="ID", help="workflow definition")
    parser.add_argument(
        "--format", choices=("auto", "csv", "jsonl"), default="auto",
        help="input format (default: by file name, else by content)",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=int, default=10, metavar="N",
        help="workflows in flight at once (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path, metavar="FILE",
        help="append results here as JSON lines (enables resume); default: stdout",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=positive_float, default=900.0, metavar="S",
        help="seconds to wait for each workflow (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    add_api_arguments(parser)
    add_poll_arguments(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    if not 1 <= args.concurrency <= 1000:
        raise UsageError("--concurrency must be between 1 and 1000")
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    rows = read_rows(args.file, args.format)
    previous = load_records(args.output) if args.output else {}
    return asyncio.run(_batch(args, rows, previous))


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """The last record of each key in an earlier output file (unreadable lines are ignored)."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with path.open(encoding="utf-8", errors="replace") as file:
        for text in file:
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("caseKey"), str):
                records[record["caseKey"]] = record
    return records


def is_finished(record: dict[str, Any]) -> bool:
    return bool(record.get("status")) and not record.get("error")


class _Output:
    """Appends one JSON line per record and flushes it at once."""

    def __init__(self, path: Path | None) -> None:
        self._file: TextIO
        if path is None:
            self._file, self._owned = sys.stdout, False
            return
        needs_newline = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
        self._file, self._owned = path.open("a", encoding="utf-8"), True
        if needs_newline:  # a line cut short by a crash must not swallow the next record
            self._file.write("\n")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._owned:
            self._file.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, 2)
        return file.read(1) == b"\n"


class _Progress:
    """``\\r done/total`` on stderr; other messages get a line of their own."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.total, self.done, self._quiet = total, 0, quiet
        self._shown = False

    def tick(self) -> None:
        self.done += 1
        self._draw()

    def note(self, message: str) -> None:
        prefix = "\r" if self._shown else ""
        print(f"{prefix}{PROG}: {message}", file=sys.stderr, flush=True)
        self._shown = False
        self._draw()

    def _draw(self) -> None:
        if not self._quiet and self.total:
            print(f"\r {self.done}/{self.total}", end="", file=sys.stderr, flush=True)
            self._shown = True

    def finish(self) -> None:
        if self._shown:
            print(file=sys.stderr, flush=True)
            self._shown = False


def _record(row: Row | BadRow, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "line": row.line,
        "caseKey": row.key if isinstance(row, Row) else None,
        "workflowId": None,
        "status": None,
        "channel": None,
        "elapsed": 0.0,
    }
    record.update(fields)
    return record


async def _batch(
    args: argparse.Namespace, rows: list[Row | BadRow], previous: dict[str, dict[str, Any]]
) -> int:
    good = [row for row in rows if isinstance(row, Row)]
    todo = [row for row in good if not is_finished(previous.get(row.key, {}))]
    bad = [row for row in rows if isinstance(row, BadRow)]
    skipped = len(good) - len(todo)
    progress = _Progress(len(todo), quiet=args.quiet)
    output = _Output(args.output)
    counts = {"completed": 0, "failed": 0, "malformed": len(bad)}
    try:
        for row in bad:
            progress.note(f"line {row.line}: {row.reason}")
            output.write(_record(row, error=f"malformed row: {row.reason}"))
        if todo:
            session = make_session(args, poll=poll_policy(args))
            async with session:
                queue = iter(todo)
                workers = [
                    asyncio.create_task(
                        _worker(session, queue, args, previous, output, progress, counts)
                    )
                    for _ in range(min(args.concurrency, len(todo)))
                ]
                try:
                    await asyncio.gather(*workers)
                finally:  # one worker failed (or Ctrl-C): stop the others before closing
                    for worker in workers:
                        worker.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
    finally:
        progress.finish()
        output.close()
    print(
        f"{PROG}: batch: {counts['completed']} completed, {counts['failed']} failed, "
        f"{counts['malformed']} malformed, {skipped} skipped (already finished)",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_ERROR if counts["failed"] or counts["malformed"] else EXIT_OK


async def _worker(
    session: Session,
    queue: Iterator[Row],
    args: argparse.Namespace,
    previous: dict[str, dict[str, Any]],
    output: _Output,
    progress: _Progress,
    counts: dict[str, int],
) -> None:
    for row in queue:  # one shared iterator: each row goes to exactly one worker
        record = await _one(session, row, args, previous.get(row.key), output)
        output.write(record)
        failed = bool(record.get("error")) or session.statuses.is_failure(record["status"] or "")
        counts["failed" if failed else "completed"] += 1
        if record.get("error"):
            progress.note(f"line {row.line}: {record['error']}")
        progress.tick()


async def _one(
    session: Session,
    row: Row,
    args: argparse.Namespace,
    earlier: dict[str, Any] | None,
    output: _Output,
) -> dict[str, Any]:
    start = time.monotonic()
    workflow_id: str | None = None
    try:
        if earlier and earlier.get("workflowId"):  # started before: wait, never run it twice
            workflow_id = str(earlier["workflowId"])
            outcome = await session.wait(workflow_id, timeout=args.timeout, raise_on_failure=False)
            return _done(row, outcome, time.monotonic() - start)
        case = await session.create_case(**row.case)
        parameters_id = None
        if row.parameters is not None:
            created = await session.create_parameters(args.definition, row.parameters)
            parameters_id = created.id
        workflow = await session.run_workflow(case.id, args.definition, parameters_id=parameters_id)
        workflow_id = workflow.id
        if session.statuses.is_terminal(workflow.status):
            return _record(
                row, workflowId=workflow.id, status=workflow.status, channel="run",
                elapsed=round(time.monotonic() - start, 3),
            )  # fmt: skip
        # Like run_and_wait: the first poll comes --poll-initial seconds after the run.
        await asyncio.sleep(min(args.poll_initial, args.timeout))
        left = max(0.001, args.timeout - (time.monotonic() - start))
        outcome = await session.wait(workflow.id, timeout=left, raise_on_failure=False)
        return _done(row, outcome, time.monotonic() - start)
    except WorkflowTimeout:
        return _record(row, workflowId=workflow_id, elapsed=_since(start), error="timeout")
    except asyncio.CancelledError:
        if workflow_id is not None:  # Ctrl-C: remember the workflow so a rerun waits for it
            output.write(
                _record(row, workflowId=workflow_id, elapsed=_since(start), error="interrupted")
            )
        raise
    except (AuthenticationError, PermissionDeniedError):
        raise  # not about this row: every other row would fail the same way
    except WorkflowsError as exc:
        return _record(row, workflowId=workflow_id, elapsed=_since(start), error=str(exc))


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)


def _done(row: Row, outcome: WorkflowOutcome, elapsed: float) -> dict[str, Any]:
    return _record(
        row,
        workflowId=outcome.workflow.id,
        status=outcome.workflow.status,
        channel=str(outcome.channel),
        elapsed=round(elapsed, 3),
    )
