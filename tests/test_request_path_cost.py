"""The request path stays at the floor (issue 16): what one ``get_workflow`` runs of this package,
counted in Python function calls (deterministic, unlike a timing; benchmarks/ measure time).

Every call on this path is paid by every API call, thousands a second under load: one that is
added should be worth it. When it is, raise the budget here and say why in the commit.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from fake_api import FakeAPI

import workflows_async as wa

PACKAGE = str(Path(wa.__file__).parent)
TESTING = str(Path(wa.__file__).parent / "testing")
WF_ID = "9b2f7d4e-1c3a-4b5d-8e6f-7a8b9c0d1e2f"
CALLS = 10
BUDGET = 17
"""Functions of the package that one get_workflow runs (after the first call of a Session):
get_workflow, check_path_id, _call_json, _check_usable; HttpClient.request, _send, _client,
_Slots.take_now and give, _attempt, _read, the auth's authorization; Recorder.call_started,
CallHandle.__init__, Recorder.attempt, status_class, Recorder.call_ended. (Generated dataclass
``__init__``s do not count: they are not in the package's files.)"""


def _counting(counts: Counter[str], seen: set[FrameType]) -> Any:
    def profile(frame: FrameType, event: str, arg: object) -> None:
        # A coroutine resumed after an await is the same frame again: counted once.
        if event != "call" or frame in seen:
            return
        name = frame.f_code.co_filename
        if name.startswith(PACKAGE) and not name.startswith(TESTING):
            seen.add(frame)
            counts[frame.f_code.co_qualname] += 1

    return profile


async def test_one_get_workflow_runs_no_more_than_its_budget_of_package_functions() -> None:
    counts: Counter[str] = Counter()
    seen: set[FrameType] = set()  # kept alive while counting, so no frame id is reused
    async with FakeAPI() as api:
        api.get(f"/workflows/{WF_ID}", payload={"id": WF_ID, "status": "RUNNING"}, repeat=True)
        async with wa.Session(
            api.base_url, wa.TokenAuth("t"), allow_insecure_http=True, opentelemetry=False
        ) as session:
            await session.get_workflow(WF_ID)  # the first call opens the connection pool
            sys.setprofile(_counting(counts, seen))
            try:
                for _ in range(CALLS):
                    await session.get_workflow(WF_ID)
            finally:
                sys.setprofile(None)
    per_call = sum(counts.values()) / CALLS
    detail = ", ".join(f"{name} x{n / CALLS:g}" for name, n in sorted(counts.items()))
    assert per_call <= BUDGET, f"{per_call:g} package calls per get_workflow: {detail}"
