"""`workflows-async listen --redis`: verified events are printed and published to Redis."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis_server import RedisServer

from workflows_async.cli import main
from workflows_async.testing import Simulator, sign_webhook


async def listening_port(proc: asyncio.subprocess.Process) -> int:
    """The port that ``listen --port 0`` says it listens on (its stderr), once it does."""
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        while line := await proc.stderr.readline():
            if found := re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line):
                return int(found.group(1))
    raise AssertionError("listen exited before it listened")


async def test_listen_publishes_verified_events_to_redis(redis_server: RedisServer) -> None:
    async with Simulator() as sim:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workflows_async", "listen", "--port", "0",
            "--redis", redis_server.url, "--base-url", sim.base_url, "--insecure-http",
            "--token", "unused",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        client = aioredis.Redis.from_url(redis_server.url)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe("workflows_async:events")
            body = json.dumps({"workflowId": "wf-1", "status": "COMPLETED", "eventId": "e1"})
            signature = sign_webhook(body.encode(), sim.private_key, sim.kid)
            url = f"http://127.0.0.1:{await listening_port(proc)}/webhooks/"
            async with aiohttp.ClientSession() as http:
                async with http.post(url, data=body, headers={"JWS-SIGNATURE": signature}) as r:
                    assert r.status == 200
                forged = sign_webhook(
                    b'{"workflowId": "x", "status": "COMPLETED"}', sim.private_key, sim.kid
                )
                async with http.post(url, data=body, headers={"JWS-SIGNATURE": forged}) as response:
                    assert response.status == 401
            message = None
            for _ in range(50):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if message:
                    break
            assert message is not None and b"wf-1" in message["data"]
        finally:
            proc.terminate()
            out, err = await proc.communicate()
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await client.aclose()
        lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        assert [(e["workflowId"], e["status"]) for e in lines] == [("wf-1", "COMPLETED")]
        assert b"Traceback" not in err


def test_listen_redis_without_the_redis_package_is_one_usage_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RedisBus, not the command, says what to install: one line, exit 2, nothing served."""
    for name in [name for name in sys.modules if name == "redis" or name.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)
    argv = ["listen", "--port", "0", "--redis", "redis://127.0.0.1:1",
            "--base-url", "http://127.0.0.1:1", "--insecure-http"]  # fmt: skip
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert not out
    assert err == (
        "workflows-async: error: RedisBus needs the redis extra: "
        "pip install 'workflows-async[redis]'\n"
    )
