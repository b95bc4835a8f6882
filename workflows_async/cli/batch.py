"""``workflows-async batch FILE``: one workflow per case row, a JSON line per row event.

Invariants: a ``started`` record is written and flushed the moment a row's run answered, and
a final record the moment the row ends, so an interruption loses nothing already started;
records hold ids, statuses and the row's key, never case data; a row whose key already has a
finished record is skipped, a row whose workflow had started is resumed by waiting for that
workflow, never run again, and a row whose run request had an unknown outcome is never run again
by itself; two rows with one key are refused before anything is sent (each row is a paid check).
Exit: 3 when any workflow ended with a failure status, else 1 when any row had an API error
(or was malformed), else 0; 130 on Ctrl-C.
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

from .._deadlines import DEFAULT_WAIT_TIMEOUT
from ..errors import (
    AuthenticationError,
    OutcomeUnknownError,
    PermissionDeniedError,
    WorkflowsError,
    WorkflowTimeout,
)
from .common import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROG,
    CliParser,
    UsageError,
    add_api_arguments,
    add_poll_arguments,
    make_session,
    poll_policy,
    positive_float,
    warn,
)
from .progress import Counts, progress_line, summary_line
from .rows import BadRow, Row, duplicate_keys, read_rows

if TYPE_CHECKING:
    from ..models import Workflow, WorkflowOutcome
    from ..session import Session


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser: CliParser = commands.add_parser(
        "batch",
        parents=[parent],
        help="run one workflow per row of a CSV or JSON Lines file",
        description=(
            "Run one workflow per case row of FILE (CSV with a header row, or JSON Lines), "
            "at most --concurrency at once. Each row's events are appended to --output as JSON "
            "lines (line, caseKey, definition, workflowId, status, channel, elapsed, error, "
            "event): 'started' as soon as the run answered, 'finished' when the row ends. "
            "Rerunning the same command resumes: finished rows are skipped, started ones "
            "waited for, never run twice. Columns: case fields in camelCase or snake_case "
            "(firstName, last_name, companyName, ...), optionally externalId or id (the row's "
            "key, which must be unique; otherwise a hash of the row), parameters (JSON object) "
            "and definition (overrides --definition for that row). Exit status: 0 all "
            "completed, 3 a workflow ended with a failure status, 1 API errors or malformed "
            "rows only (rerun to retry), 2 usage error, 130 interrupted."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the cases, CSV or JSON Lines")
    parser.add_argument(
        "--definition", metavar="ID",
        help="workflow definition id (required unless every row has a definition column)",
    )  # fmt: skip
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
        help="append records here as JSON lines (enables resume); default: stdout",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=positive_float, default=DEFAULT_WAIT_TIMEOUT, metavar="S",
        help="seconds to wait for each workflow (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--json", action="store_true",
        help="print one JSON summary object on stdout at the end (needs --output)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    add_api_arguments(parser)
    add_poll_arguments(parser)
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    if not 1 <= args.concurrency <= 1000:
        raise UsageError("--concurrency must be between 1 and 1000")
    if args.json and args.output is None:
        raise UsageError("--json needs --output (without it the records go to stdout)")
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    rows = read_rows(args.file, args.format)
    check_rows(args.file, rows, args.definition)
    previous = load_records(args.output) if args.output else {}
    batch = _Batch(args, rows, previous)
    try:
        return asyncio.run(batch.run())
    except KeyboardInterrupt:
        batch.report(interrupted=True)
        if args.output is not None:
            warn("interrupted: rerun the same command to resume (nothing is run twice)")
        else:
            warn("interrupted: the started workflows are listed above (use --output to resume)")
        return EXIT_INTERRUPTED


def check_rows(path: Path, rows: list[Row | BadRow], definition: str | None) -> None:
    """Refuse, before anything is sent, what would run a paid check twice or not at all."""
    for key, lines in duplicate_keys(rows).items():
        where = ", ".join(str(line) for line in lines)
        raise UsageError(
            f"{path}: rows on lines {where} have the same key {key!r}; each row is a paid "
            f"check: give each its own externalId, or remove the repeated row"
        )
    if definition is None:
        for row in rows:
            if isinstance(row, Row) and row.definition is None:
                raise UsageError(
                    f"{path}: line {row.line} has no definition column: pass --definition"
                )


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
    return bool(record.get("status")) and not record.get("error") and not _started(record)


def _started(record: dict[str, Any]) -> bool:
    return record.get("event") == "started"


def is_unknown(record: dict[str, Any]) -> bool:
    """A run request whose outcome is unknown, and no workflow id to wait for."""
    return bool(record.get("outcomeUnknown")) and not record.get("workflowId")


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
    """The progress line, redrawn in place on a terminal only; notes get a line of their own."""

    def __init__(self, counts: Counts, *, quiet: bool, stream: TextIO) -> None:
        self._counts, self._stream = counts, stream
        self._live = not quiet and stream.isatty()
        self._start = time.monotonic()
        self._shown = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def tick(self) -> None:
        if self._live and self._counts.total:
            line = progress_line(self._counts, self.elapsed)
            print(f"\r\x1b[K{line}", end="", file=self._stream, flush=True)
            self._shown = True

    def note(self, message: str) -> None:
        self.finish()
        print(f"{PROG}: {message}", file=self._stream, flush=True)
        self.tick()

    def finish(self) -> None:
        if self._shown:
            print("\r\x1b[K", end="", file=self._stream, flush=True)
            self._shown = False


def _record(row: Row | BadRow, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "line": row.line,
        "caseKey": row.key if isinstance(row, Row) else None,
        "workflowId": None,
        "status": None,
        "channel": None,
        "elapsed": 0.0,
        "error": None,
        "event": "finished",
    }
    record.update(fields)
    return record


class _Batch:
    """One invocation: its rows, counts, and the records of the rows that did not complete."""

    def __init__(
        self, args: argparse.Namespace, rows: list[Row | BadRow], previous: dict[str, Any]
    ) -> None:
        self.args, self.previous = args, previous
        good = [row for row in rows if isinstance(row, Row)]
        self.unknown = [row for row in good if is_unknown(previous.get(row.key, {}))]
        self.todo = [
            row
            for row in good
            if not is_finished(previous.get(row.key, {})) and row not in self.unknown
        ]
        self.bad = [row for row in rows if isinstance(row, BadRow)]
        self.counts = Counts(
            total=len(self.todo),
            malformed=len(self.bad),
            skipped=len(good) - len(self.todo) - len(self.unknown),
        )
        self.failed_rows: list[dict[str, Any]] = []
        self.error_rows: list[dict[str, Any]] = []
        self.progress = _Progress(self.counts, quiet=args.quiet, stream=sys.stderr)
        self.reported = False

    async def run(self) -> int:
        output = _Output(self.args.output)
        try:
            for bad in self.bad:
                self.progress.note(f"line {bad.line}: {bad.reason}")
                output.write(_record(bad, error=f"malformed row: {bad.reason}"))
            for row in self.unknown:
                self.progress.note(
                    f"line {row.line}: an earlier run request had an unknown outcome; not run "
                    "again: check the API first (see README Failure semantics), then remove its "
                    "lines from the output file to run it"
                )
            if self.todo:
                await self._run_rows(output)
        finally:
            self.progress.finish()
            output.close()
        self.report(interrupted=False)
        if self.counts.failed:
            return EXIT_FAILED
        if self.counts.api_errors or self.counts.malformed or self.unknown:
            return EXIT_ERROR
        return EXIT_OK

    async def _run_rows(self, output: _Output) -> None:
        session = make_session(self.args, poll=poll_policy(self.args))
        async with session:
            queue = iter(self.todo)
            workers = [
                asyncio.create_task(self._worker(session, queue, output))
                for _ in range(min(self.args.concurrency, len(self.todo)))
            ]
            self.progress.tick()
            try:
                await asyncio.gather(*workers)
            finally:  # one worker failed (or Ctrl-C): stop the others before closing
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, session: Session, queue: Iterator[Row], output: _Output) -> None:
        for row in queue:  # one shared iterator: each row goes to exactly one worker
            record = await _one(session, row, self.args, self.previous.get(row.key), output)
            output.write(record)
            brief = {k: record[k] for k in ("line", "caseKey", "workflowId", "status")}
            if record.get("error"):
                self.counts.api_errors += 1
                self.error_rows.append({**brief, "error": record["error"]})
                self.progress.note(f"line {row.line}: {record['error']}")
            elif session.statuses.is_failure(record["status"] or ""):
                self.counts.failed += 1
                self.failed_rows.append(brief)
            else:
                self.counts.completed += 1
            self.progress.tick()

    def report(self, *, interrupted: bool) -> None:
        """The summary: one line on stderr, and with --json one object on stdout. Once."""
        if self.reported:
            return
        self.reported = True
        self.progress.finish()
        warn(summary_line(self.counts, self.progress.elapsed))
        if self.args.json:
            print(json.dumps(self.summary(interrupted=interrupted)), flush=True)

    def summary(self, *, interrupted: bool) -> dict[str, Any]:
        counts = self.counts
        return {
            "total": counts.total + counts.skipped + counts.malformed,
            "completed": counts.completed,
            "failed": counts.failed,
            "apiErrors": counts.api_errors,
            "malformed": counts.malformed,
            "skipped": counts.skipped,
            "notRun": counts.total - counts.finished,
            "interrupted": interrupted,
            "failedRows": self.failed_rows,
            "apiErrorRows": self.error_rows,
            "malformedRows": [{"line": row.line, "reason": row.reason} for row in self.bad],
            "unknownOutcomeRows": [{"line": r.line, "caseKey": r.key} for r in self.unknown],
            "output": str(self.args.output) if self.args.output is not None else None,
        }


async def _one(
    session: Session,
    row: Row,
    args: argparse.Namespace,
    earlier: dict[str, Any] | None,
    output: _Output,
) -> dict[str, Any]:
    start = time.monotonic()
    definition = row.definition or args.definition
    base = {"definition": definition}
    workflow_id: str | None = None

    def started(workflow: Workflow) -> None:  # the id is on disk before any waiting
        nonlocal workflow_id
        workflow_id = workflow.id
        output.write(
            _record(row, **base, workflowId=workflow.id, elapsed=_since(start), event="started")
        )

    try:
        if earlier and earlier.get("workflowId"):  # started before: wait, never run it twice
            workflow_id = str(earlier["workflowId"])
            outcome = await session.wait(workflow_id, timeout=args.timeout, raise_on_failure=False)
            return _done(row, base, outcome, time.monotonic() - start)
        case = await session.create_case(**row.case)
        outcome = await session.run_and_wait(
            case.id,
            definition,
            parameters=row.parameters,
            timeout=args.timeout,
            raise_on_failure=False,
            on_started=started,
        )
        return _done(row, base, outcome, time.monotonic() - start)
    except WorkflowTimeout:
        return _record(row, **base, workflowId=workflow_id, elapsed=_since(start), error="timeout")
    except asyncio.CancelledError:
        if workflow_id is not None:  # Ctrl-C: remember the workflow so a rerun waits for it
            output.write(
                _record(
                    row, **base, workflowId=workflow_id, elapsed=_since(start), error="interrupted"
                )
            )
        raise
    except (AuthenticationError, PermissionDeniedError):
        raise  # not about this row: every other row would fail the same way
    except OutcomeUnknownError as exc:
        wid = exc.workflow_id or workflow_id
        unknown = wid is None and exc.path.startswith("/workflows")
        return _record(
            row, **base, workflowId=wid, elapsed=_since(start), error=str(exc),
            **({"outcomeUnknown": True} if unknown else {}),
        )  # fmt: skip
    except WorkflowsError as exc:
        wid = exc.workflow_id or workflow_id
        return _record(row, **base, workflowId=wid, elapsed=_since(start), error=str(exc))


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)


def _done(
    row: Row, base: dict[str, Any], outcome: WorkflowOutcome, elapsed: float
) -> dict[str, Any]:
    return _record(
        row,
        **base,
        workflowId=outcome.workflow.id,
        status=outcome.workflow.status,
        channel=str(outcome.channel),
        elapsed=round(elapsed, 3),
    )
