"""The benchmarks still run: ``benchmarks/run.py --smoke`` exits 0 and prints every section.

Only that they work is checked, never how fast: the figures mean something only on a quiet
machine and next to their own baselines (see benchmarks/README.md). The smoke mode runs its
helper roles in its own process (a few seconds in all), so one helper is also started here as
the full runs start them: a process speaking the ``_proc.py`` protocol.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def bench_module(name: str) -> Any:
    """A module of benchmarks/ (not a package: imported with its folder on the path)."""
    sys.path.insert(0, str(RUN.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(RUN.parent))


def test_only_selects_the_named_benchmarks() -> None:
    """``--only`` parsed in-process (a second subprocess run would double the test's time)."""
    bench_run = bench_module("run")
    args = bench_run._parse(["--smoke", "--only", "overhead", "economy"])
    assert args.smoke and args.only == ["overhead", "economy"]
    assert set(args.only) <= set(bench_run.BENCHMARKS)


async def test_a_helper_process_starts_answers_and_stops() -> None:
    child_type = bench_module("_proc").Child
    assert not child_type.inline  # only run.py --smoke sets it
    config = {"sims": {"a": {"time_scale": 0.01, "definitions": {"d": 1.0}}}}
    async with await child_type.start("sims", config, timeout=60) as host:
        assert set(host.info["sims"]) == {"a"}
        assert await host.ask("webhooks", urls={"a": "http://127.0.0.1:9/hooks/"}) == {}
        assert (await host.ask("stats"))["a"]["routes"] == {}
        assert await host.cpu() > 0


async def test_the_instruction_count_benchmark_sends_to_both_targets(tmp_path: Path) -> None:
    """``benchmarks/instructions.py`` without valgrind: its measured process signs nothing,
    serves the receiver and gets 200 for every webhook, to the Session's sub-app and to the
    floor alike (a refusal would end it with the status)."""
    instructions = bench_module("instructions")
    data = tmp_path / "requests.pickle"
    instructions._prepare(data, 3)
    for target in instructions.TARGETS:
        await instructions._serve_and_send(target, 3, data.read_bytes())
