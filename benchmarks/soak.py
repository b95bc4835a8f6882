"""Chaos soak (issue 10): N concurrent run_and_wait against a Simulator that drops (20%) and
duplicates (all) webhooks, sends them before the run response, answers 429/5xx to GETs and
429/503 to POSTs before effect, issues 3-second tokens, revokes them at random and rotates its
signing key mid-run before serving the new key. Prints a table; exits 1 when a target is missed
(0 lost, 0 wrong failures, 0 failed case creations, 0 duplicate workflows, 0 leaked tasks, no
signed webhook refused to the end), 2 on bad arguments.

    .venv/bin/python benchmarks/soak.py              # n=2000 (a minute or two)
    .venv/bin/python benchmarks/soak.py --quick      # n=200
    .venv/bin/python benchmarks/soak.py --base       # without revocation and key rotation
    .venv/bin/python benchmarks/soak.py --after-effect 0.02   # + 503 after effect on 2% of runs

The core is ``tests/chaos_soak.py`` (shared with ``tests/test_soak.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chaos_soak import Scenario, soak


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--n", type=int, default=2000, help="concurrent runs (default 2000)")
    size.add_argument("--quick", action="store_true", help="n=200")
    parser.add_argument("--base", action="store_true", help="no token revocation, no rotation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--revoke-every", type=float, default=3.0, help="mean seconds between token revocations"
    )
    parser.add_argument("--after-effect", type=float, default=0.0, help="share of runs")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds, all included")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 200
    if args.n < 1 or args.deadline < 30:
        parser.error("--n must be >= 1 and --deadline >= 30")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the chaos is the point: no log flood
    options = {
        "n": args.n,
        "seed": args.seed,
        "after_effect_rate": args.after_effect,
        "deadline": args.deadline,
        "wait_timeout": max(30.0, args.deadline - 60.0),
    }
    if args.base:
        scenario = dataclasses.replace(Scenario(), **options)
    else:
        scenario = Scenario.full(revoke_tokens_every=args.revoke_every, **options)
    # The last resort if the event loop itself stops turning: dump the stacks and exit.
    faulthandler.dump_traceback_later(args.deadline + 60.0, exit=True)
    report = asyncio.run(soak(scenario))
    faulthandler.cancel_dump_traceback_later()
    kind = "base" if args.base else "full"
    print(f"Chaos soak ({kind}): n={args.n:,}, seed={args.seed}")
    print(report.table())
    missed = report.targets_missed()
    print("targets: " + ("all met" if not missed else "MISSED " + ", ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
