"""Optional profiling with pyinstrument (not a dependency: ``.venv/bin/pip install pyinstrument``).

``run.py --profile DIR`` sets ``WORKFLOWS_BENCH_PROFILE=DIR``; then every benchmark section (in
this process) and every helper process writes a text profile there, ``<section>.txt`` and
``child-<role>-<pid>.txt``, so the server side of a benchmark is profiled too.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ENV", "profiled"]

ENV = "WORKFLOWS_BENCH_PROFILE"


@contextmanager
def profiled(label: str) -> Iterator[None]:
    """Profile the block into ``$WORKFLOWS_BENCH_PROFILE/<label>.txt`` when that is set."""
    directory = os.environ.get(ENV)
    if not directory:
        yield
        return
    try:
        pyinstrument = importlib.import_module("pyinstrument")
    except ImportError:
        raise SystemExit(
            "--profile needs pyinstrument: .venv/bin/pip install pyinstrument"
        ) from None
    profiler = pyinstrument.Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        report = profiler.output_text(unicode=False, color=False)
        Path(directory, f"{label}.txt").write_text(report)
