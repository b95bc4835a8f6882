"""Benchmarks of workflows_async. Every figure is printed next to a baseline measured
in the same run, with the ratio, so the numbers mean something on a noisy machine.

    .venv/bin/python benchmarks/run.py            # full: the README figures (~7 min, 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # ~2 min on 2 cores (measured: 123 s)
    .venv/bin/python benchmarks/run.py --smoke    # seconds: proves the scripts still run
    .venv/bin/python benchmarks/run.py --only overhead ingest
    .venv/bin/python benchmarks/run.py --quick --profile /tmp/profiles   # needs pyinstrument

Sections: overhead (1), ingest (2), waiting (3), economy (4), e2e (5), simulator (6).
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import Child
from _profile import ENV, profiled
from _report import MODES, Mode, Section, machine, markdown, print_section

# name -> module with ``async def run(mode) -> Section``, in the order they run.
BENCHMARKS = {
    "overhead": "_overhead",
    "ingest": "_ingest",
    "waiting": "_waiting",
    "economy": "_economy",
    "e2e": "_e2e",
    "simulator": "_simcap",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="smaller runs: about 2 minutes on 2 cores"
    )
    size.add_argument(
        "--smoke", action="store_true", help="tiny runs, in one process: only proves they work"
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME", help="run only these"
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="write pyinstrument profiles (optional package) to DIR"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    mode: Mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    names = args.only or list(BENCHMARKS)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        os.environ[ENV] = str(Path(args.profile).resolve())  # helper processes inherit it
    logging.basicConfig(level=logging.ERROR)  # the library's warnings are expected noise here
    Child.inline = mode.inline
    print(f"workflows_async benchmarks, {mode.name} mode: {machine()}")
    started = time.perf_counter()
    sections: list[Section] = []
    for name in BENCHMARKS:
        if name not in names:
            continue
        module = importlib.import_module(BENCHMARKS[name])
        bench: Callable[[Mode], Coroutine[Any, Any, Section]] = module.run
        if mode.inline:  # the sections' gc.collect() calls need not walk everything loaded so far
            gc.freeze()
        begun = time.perf_counter()
        with profiled(name):
            section = asyncio.run(bench(mode))
        section.seconds = time.perf_counter() - begun
        print_section(section)
        sections.append(section)
    print(f"\nSummary ({mode.name} mode, {machine()}; {time.perf_counter() - started:.0f} s)\n")
    print(markdown(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
