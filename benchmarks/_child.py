"""Entry point of a helper process: ``python benchmarks/_child.py ROLE CONFIG_JSON``.

See ``_proc.py`` for the protocol. A role is an async context manager, given the config, that
yields ``(info, handle)``: ``info`` is printed once ready, ``handle(command)`` answers the
commands that are not ``cpu``. Roles live next to the benchmark that uses them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from _proc import Role, find_role
from _profile import profiled


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def main(role_name: str, config: dict[str, Any]) -> None:
    role: Role = find_role(role_name)
    async with role(config) as (info, handle):
        _emit(info)
        while line := await asyncio.to_thread(sys.stdin.readline):
            command: dict[str, Any] = json.loads(line)
            if command.get("cmd") == "cpu":
                _emit({"cpu": time.process_time()})
            else:
                _emit(await handle(command))


if __name__ == "__main__":
    with profiled(f"child-{sys.argv[1]}-{os.getpid()}"):
        asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
