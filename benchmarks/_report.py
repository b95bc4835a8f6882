"""Figures, their baselines, and how they are printed; the sizes of each run mode.

Invariants: every figure is printed next to the baseline measured in the same run, with the
ratio between them; a goal is judged only from figures of this run, never from constants; where
repetitions give a spread, a verdict is stated only when the whole spread is on one side of the
goal ("met" / "MISSED"), else it is "inconclusive".
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
from collections.abc import Callable, Sequence

import aiohttp
import httpx
import msgspec

__all__ = [
    "CONCURRENCY",
    "LATENCY_RATE",
    "MODES",
    "Mode",
    "Row",
    "Section",
    "fmt",
    "judge",
    "machine",
    "markdown",
    "median",
    "paired",
    "percentile",
    "print_section",
    "spread",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Mode:
    """How big each benchmark runs. ``full`` gives the README figures (about 5 minutes on 2
    cores), ``quick`` about 1.5 minutes, ``smoke`` a few seconds (it only proves they run: its
    helper roles run in this process, see ``_proc.py``)."""

    name: str
    overhead_calls: int  # get_workflow calls per repetition and client
    overhead_reps: int
    ingest_requests: int  # webhooks per repetition and receiver
    ingest_reps: int
    waiters: tuple[int, ...]  # pending waits for the memory probe
    latency_pending: int  # pending waits while latency is measured
    latency_events: int  # webhooks resolved per latency variant (at latency_rate per second)
    latency_reps: int  # interleaved repetitions of the HTTP wake-up variants
    economy_scale: float  # Simulator time_scale for the API-economy runs
    economy_workflows: int  # workflows per duration for each library configuration
    economy_naive: int  # workflows per duration for each fixed-interval loop
    e2e_runs: int
    e2e_scale: float
    sim_workflows: int  # workflows one Simulator holds while it is loaded
    sim_seconds: float  # seconds of load at 2,000 requests/s (per target)
    inline: bool = False  # helper roles run in this process (smoke: the code runs, no figures)


MODES = {
    "full": Mode("full", 3000, 11, 2000, 9, (10_000, 100_000), 10_000, 3000, 7, 0.02, 10, 3, 2000,
                 .05, 10_000, 10.0),
    "quick": Mode("quick", 800, 7, 1200, 3, (10_000,), 10_000, 1000, 5, 0.01, 5, 2, 300, 0.03,
                  10_000, 5.0),
    # smoke: one repetition, tiny sizes, sped-up clocks, no helper processes; the seconds of
    # tests/test_benchmarks_smoke.py, and only proves that every section runs and reports.
    "smoke": Mode("smoke", 50, 1, 40, 1, (300,), 300, 30, 1, 0.0005, 1, 1, 10, 0.002,
                  100, 0.1, inline=True),
}  # fmt: skip
LATENCY_RATE = 1000.0  # webhooks per second while latency is measured
CONCURRENCY = 20  # concurrent get_workflow calls in the per-call overhead benchmark


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One figure: ``value`` against ``baseline`` (measured in the same run)."""

    figure: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    goal: str = ""
    met: bool | None = None  # None: no goal, or nothing to judge
    note: str = ""
    verdict: str | None = None  # "met", "MISSED" or "inconclusive" (from a spread); else met
    ratios: tuple[float, ...] = ()  # each repetition's ratio to its own baseline (paired)

    @property
    def ratio(self) -> float | None:
        """The median of the paired ratios when the row has them, else value / baseline."""
        if self.ratios:
            return statistics.median(self.ratios)
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


@dataclasses.dataclass(slots=True)
class Section:
    number: int
    title: str
    rows: list[Row] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def fmt(value: float) -> str:
    """A figure with as many digits as it deserves."""
    if math.isnan(value):
        return "n/a"
    size = abs(value)
    if float(value).is_integer() and size < 1e15:
        return f"{int(value):,}"
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def spread(values: Sequence[float]) -> tuple[float, float]:
    """The interquartile range of ``values`` when there are 8 or more, else min and max."""
    if not values:
        return (math.nan, math.nan)
    if len(values) < 8:
        return (min(values), max(values))
    quartiles = statistics.quantiles(values, n=4)
    return (quartiles[0], quartiles[2])


def judge(values: Sequence[float], limit: float, *, at_least: bool = False) -> str:
    """ "met" when the whole spread of ``values`` is within ``limit`` (at most, or
    ``at_least``), "MISSED" when it is all outside, else "inconclusive"."""
    low, high = spread(values)
    if math.isnan(low):
        return "inconclusive"
    inside, outside = (low >= limit, high < limit) if at_least else (high <= limit, low > limit)
    return "met" if inside else "MISSED" if outside else "inconclusive"


def paired(values: Sequence[float], baselines: Sequence[float]) -> list[float]:
    """Each repetition's ratio to the baseline measured right beside it."""
    return [v / b for v, b in zip(values, baselines, strict=True) if b]


def _verdict(row: Row) -> str:
    if row.verdict is not None:
        inconclusive = "inconclusive (spread crosses the goal)"
        return inconclusive if row.verdict == "inconclusive" else row.verdict
    if row.met is None:
        return ""
    return "met" if row.met else "MISSED"


def _spread_text(row: Row) -> str:
    if not row.ratios:
        return ""
    low, high = spread(row.ratios)
    return f" [{'IQR' if len(row.ratios) >= 8 else 'min-max'} {low:.2f}-{high:.2f}]"


def print_section(section: Section, out: Callable[[str], None] = print) -> None:
    out(f"\n[{section.number}] {section.title}  ({section.seconds:.1f} s)")
    for row in section.rows:
        line = f"  {row.figure:<50} {fmt(row.value):>10} {row.unit:<12}"
        if row.baseline is not None:
            ratio = row.ratio
            shown = f"{ratio:.2f}x" if ratio is not None else "-"
            line += f" | {row.baseline_name}: {fmt(row.baseline)} -> {shown}{_spread_text(row)}"
        if row.goal:
            line += f" | goal {row.goal}: {_verdict(row)}"
        out(line)
        if row.note:
            out(f"  {'':<50} ({row.note})")
    for note in section.notes:
        out(f"  note: {note}")


def markdown(sections: Sequence[Section]) -> str:
    """The summary table, ready to paste into benchmarks/README.md."""
    lines = [
        "| # | figure | value | baseline | ratio | goal |",
        "|---|---|---|---|---|---|",
    ]
    for section in sections:
        for row in section.rows:
            base = row.baseline
            baseline = f"{row.baseline_name} {fmt(base)}" if base is not None else ""
            ratio = f"{row.ratio:.2f}x{_spread_text(row)}" if row.ratio is not None else ""
            judged = row.met is not None or row.verdict is not None
            goal = f"{row.goal}: **{_verdict(row)}**" if row.goal and judged else ""
            lines.append(
                f"| {section.number} | {row.figure} | {fmt(row.value)} {row.unit} "
                f"| {baseline} | {ratio} | {goal} |"
            )
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, httpx {httpx.__version__}, msgspec {msgspec.__version__}"
    )


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` quantile (0..1) of ``values`` by nearest rank; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan
