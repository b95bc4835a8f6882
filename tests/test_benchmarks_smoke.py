"""The benchmarks still run: ``benchmarks/run.py --smoke`` exits 0 and prints every section.

Only that they work is checked, never how fast: the figures mean something only on a quiet
machine and next to their own baselines (see benchmarks/README.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
SECTIONS = (
    "[1] per-call overhead",
    "[2] webhook ingest",
    "[3] waiting at scale",
    "[4] API economy",
    "[5] end to end",
    "[6] Simulator capacity",
)


def test_every_benchmark_runs_and_reports() -> None:
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [sys.executable, str(RUN), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for section in SECTIONS:
        assert section in done.stdout, f"{section!r} missing from:\n{done.stdout[-4000:]}"
    summary = done.stdout.split("\nSummary (", 1)
    assert len(summary) == 2, "no summary table"
    assert "| # | figure | value | baseline | ratio | goal |" in summary[1]
    assert "Traceback" not in done.stderr


def test_only_selects_the_named_benchmarks() -> None:
    """``--only`` parsed in-process (a second subprocess run would double the test's time)."""
    sys.path.insert(0, str(RUN.parent))
    try:
        import run as bench_run  # the benchmarks are not a package
    finally:
        sys.path.remove(str(RUN.parent))
    args = bench_run._parse(["--smoke", "--only", "overhead", "economy"])
    assert args.smoke and args.only == ["overhead", "economy"]
    assert set(args.only) <= set(bench_run.BENCHMARKS)
