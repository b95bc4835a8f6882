"""Webhook ingest in CPU instructions: deterministic, where CPU time on a shared machine is not.

    .venv/bin/python benchmarks/instructions.py            # 300 and 1,300 webhooks per target
    .venv/bin/python benchmarks/instructions.py --small 50 --large 250   # quicker, coarser

Each target of benchmark 2's receiver (``_ingest.webhook_server``: the Session's sub-app at
``/webhooks/``, the ingest floor at ``/floor/``: a bare handler plus one RS256 verify) is served
in a fresh interpreter under valgrind's callgrind and sent N distinct signed terminal webhooks
over one keep-alive connection from the same process. The instructions per webhook are the
difference between a run of ``--large`` and a run of ``--small`` webhooks, divided by the
difference in count, so start-up and import costs cancel out. It counts what the CPU executes,
not how long it takes (cache misses, the allocator's page faults and other processes do not
show), so it complements the CPU-time rows of ``run.py --only ingest``; both are reported.

The requests are signed before valgrind starts (signing is the platform's work). Needs
``valgrind`` on the PATH; without it, says so and exits 0. Four runs, two at a time: about two
minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGETS = ("webhooks", "floor")
GOAL = 1.2  # issue 16: ingest within 1.2x of the floor


def _prepare(path: Path, count: int) -> None:
    from _ingest import signed_events

    from workflows_async.testing import generate_signing_key, public_key_pem

    key, kid = generate_signing_key(), "6f1c2e1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
    events = [(body, signature) for _, body, signature in signed_events(count, kid, key)]
    path.write_bytes(pickle.dumps((kid, public_key_pem(key), events)))


async def _serve_and_send(target: str, count: int, data: bytes) -> None:
    """The measured process: the receiver and a client sending ``count`` webhooks to it."""
    from _ingest import webhook_request, webhook_server
    from _rawhttp import RawConnection

    kid, pem, events = pickle.loads(data)  # noqa: S301 - our own file, written just before
    requests = [webhook_request("127.0.0.1", f"/{target}/", b, s) for b, s in events[:count]]
    async with webhook_server({"kid": kid, "pem": pem}) as (ready, _):
        connection = await RawConnection.open("127.0.0.1", ready["port"])
        for request in requests:
            status = await connection.send(request)
            if status != 200:
                raise SystemExit(f"{target}: answered {status}")
        await connection.close()


def _instructions(target: str, count: int, path: Path) -> subprocess.Popen[str]:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--serve",
        target,
        str(count),
        str(path),
    ]
    return subprocess.Popen(  # noqa: S603 - valgrind and this script, no outside input
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _collected(process: subprocess.Popen[str]) -> int:
    output, _ = process.communicate()
    found = re.search(r"Collected : (\d+)", output)
    if process.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed:\n{output[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=1300)
    parser.add_argument("--serve", nargs=3, metavar=("TARGET", "N", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        target, count, path = args.serve
        asyncio.run(_serve_and_send(target, int(count), Path(path).read_bytes()))
        return 0
    if not 0 < args.small < args.large:
        parser.error("need 0 < --small < --large")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: no instruction counts (apt-get install valgrind)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.pickle"
        _prepare(path, args.large)
        per: dict[str, float] = {}
        for target in TARGETS:  # two runs at a time: one per core
            small = _instructions(target, args.small, path)
            large = _instructions(target, args.large, path)
            per[target] = (_collected(large) - _collected(small)) / (args.large - args.small)
    library, floor = per["webhooks"], per["floor"]
    ratio = library / floor
    verdict = "met" if ratio <= GOAL else "MISSED"
    print(f"instructions per webhook, {args.small} -> {args.large} webhooks (callgrind):")
    print(f"  ingest floor (bare handler + one RSA-2048 verify): {floor:,.0f}")
    print(f"  the Session's webhook sub-app:                      {library:,.0f}")
    print(f"  above the floor:                                    {library - floor:,.0f}")
    print(f"  ratio: {ratio:.3f}x the floor | goal <= {GOAL}x: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
