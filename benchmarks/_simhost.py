"""Role ``sims``: one or more Simulators in a helper process, so their CPU is not the client's.

Config: ``{"sims": {name: {"time_scale", "seed", "drop_webhooks", "webhook_urls",
"definitions": {definition id: duration in simulated seconds}}}}``. Every definition runs
``IN_PROGRESS`` then ``COMPLETED`` (one webhook, at the end). Info: each simulator's
``base_url``, ``key`` and ``secret``. Command ``webhooks`` with ``urls`` ``{name: url}``: each
named simulator sends its webhooks to that URL too (a receiver that was served on port 0 after
the simulators started). Command ``stats``: per simulator, the calls by route and, per workflow
id, its status polls and result fetches and the wall seconds from when it was due to complete
to its first result fetch (``delays``), plus the webhook counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from _proc import Ready

from workflows_async.testing import Faults, Simulator, WorkflowDefinition, generate_signing_key

__all__ = ["simulators"]

POLL_ROUTE = "GET /workflows/{id}"
RESULT_ROUTE = "GET /workflows/{id}/result"


def _due(sim: Simulator, workflow_id: str) -> float:
    """When the workflow was due to complete (wall clock): its start plus its scaled duration.

    Not the time the transition was applied: a read applies a due transition itself when the
    timer has not fired yet, and that would make a late poll look punctual."""
    info = sim.workflows[workflow_id]
    return info.history[0][1] + sim.definitions[info.definition_id].duration * sim.time_scale


def _stats(sim: Simulator) -> dict[str, Any]:
    polls: Counter[str] = Counter()
    results: Counter[str] = Counter()
    fetched: dict[str, float] = {}  # workflow id -> when its result was first asked for
    for record in sim.requests:
        if record.route == POLL_ROUTE:
            polls[record.path.split("/")[2]] += 1
        elif record.route == RESULT_ROUTE:
            workflow_id = record.path.split("/")[2]
            results[workflow_id] += 1
            fetched.setdefault(workflow_id, record.time)
    delays = {wid: at - _due(sim, wid) for wid, at in fetched.items()}
    dropped = sum(1 for attempt in sim.webhook_attempts if attempt.outcome == "dropped")
    return {
        "routes": dict(sim.calls_by_route),
        "polls": dict(polls),
        "results": dict(results),
        "delays": delays,
        "webhooks_sent": sim.webhooks_sent,
        "webhooks_delivered": sim.webhooks_delivered,
        "webhooks_dropped": dropped,
    }


@asynccontextmanager
async def simulators(config: dict[str, Any]) -> AsyncIterator[Ready]:
    key = generate_signing_key()  # one key for all: generating one costs ~0.1 s
    sims: dict[str, Simulator] = {}
    async with AsyncExitStack() as stack:
        for name, spec in config["sims"].items():
            definitions = {
                definition: WorkflowDefinition(("IN_PROGRESS", "COMPLETED"), duration)
                for definition, duration in spec["definitions"].items()
            }
            sim = Simulator(
                definitions=definitions,
                webhook_urls=spec.get("webhook_urls", ()),
                time_scale=spec["time_scale"],
                seed=spec.get("seed", 7),
                faults=Faults(drop_webhooks=spec.get("drop_webhooks", 0.0)),
                signing_key=key,
            )
            sims[name] = await stack.enter_async_context(sim)

        async def handle(command: dict[str, Any]) -> dict[str, Any]:
            if command["cmd"] == "webhooks":
                for name, url in command["urls"].items():
                    sims[name].add_webhook_url(url)
                return {}
            if command["cmd"] != "stats":
                raise ValueError(f"unknown command {command!r}")
            return {name: _stats(sim) for name, sim in sims.items()}

        info = {
            name: {"base_url": sim.base_url, "key": sim.key, "secret": sim.secret}
            for name, sim in sims.items()
        }
        yield {"sims": info}, handle
