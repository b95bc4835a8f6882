"""A burst of webhooks on a healthy Redis (issue 10, item 13): three worker processes, 300 signed
webhooks at once, spread over them. No webhook may be refused and no ``once=True`` hook may run
twice: a worker's local connection limit is not "Redis is down".
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import aiohttp
from redis_server import RedisServer
from test_many_workers import Cluster, cluster

from workflows_async.testing import sign_webhook
from workflows_async.webhooks import SIGNATURE_HEADER

EVENTS = 300


async def post_signed(c: Cluster, http: aiohttp.ClientSession, n: int) -> int:
    body = json.dumps(
        {"workflowId": f"wf-burst-{n}", "status": "COMPLETED", "eventId": f"ev-burst-{n}"}
    ).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_webhook(body, c.sim.private_key, c.sim.kid),
    }
    url = f"{c.workers[n % len(c.workers)].url}/webhooks/"
    async with http.post(url, data=body, headers=headers) as reply:
        await reply.read()
        return reply.status


async def test_a_burst_of_webhooks_on_a_healthy_redis_is_all_accepted_and_hooks_run_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with cluster(redis_server, tmp_path, initial_delay=5.0) as c:
        connector = aiohttp.TCPConnector(limit=0)  # really 300 requests at once
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            await post_signed(c, http, -1)  # the workers fetch the signing key once
            answers = Counter(
                await asyncio.gather(*(post_signed(c, http, n) for n in range(EVENTS)))
            )
        assert answers == Counter({200: EVENTS})  # no 503: nothing was refused
        events = {f"id:ev-burst-{n}" for n in range(-1, EVENTS)}
        states = await c.until(
            lambda s: (
                all(w["bus"]["delivered"] >= len(events) for w in s)
                and sum(sum(w["hooks"].values()) for w in s) >= len(events)
            ),
            "every event reached every worker and its hook ran",
        )
        await asyncio.sleep(0.5)  # a late second run of a hook would show up here
        states = await c.states()
        hook_runs: Counter[str] = Counter()
        for w in states:
            hook_runs.update(w["hooks"])
        assert hook_runs == Counter(dict.fromkeys(events, 1))  # once each, in the whole cluster
        for w in states:
            assert w["bus"]["delivered"] == len(events), w["name"]
            assert w["dispatched"] == len(events), w["name"]
