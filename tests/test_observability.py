"""What an operator sees: log records, ``session.stats()`` and lost webhooks, against the Simulator.

The secrets test runs flows with faults injected and personal data in them, captures EVERY log
record at DEBUG (all loggers, not only the library's) and looks for each secret and personal
value in every message, argument and extra field.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator

import aiohttp
import pytest
from eventually import eventually
from stack import FAST_POLL, receiver, stack

import workflows_async as wa
from workflows_async.testing import Faults, Simulator, WorkflowDefinition

PERSON = {
    "first_name": "Ingrid",
    "last_name": "Bergqvist-Testperson",
    "personal_number": "19121212-1212",
    "email": "ingrid.bergqvist@example.test",
    "company_name": "Bergqvist Hemlig AB",
}
PARAMETERS = {"iban": "SE4550000000058398257466", "note": "param-value-do-not-log"}


class Sent:
    """Every credential the client sent (Authorization headers, token request bodies),
    collected through aiohttp's request tracing: the values that must never be logged."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.config = aiohttp.TraceConfig()
        self.config.on_request_start.append(self._start)
        self.config.on_request_chunk_sent.append(self._chunk)

    async def _start(
        self, session: object, ctx: types.SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        auth = params.headers.get("Authorization")
        if auth:
            self.values.add(auth.removeprefix("Bearer "))

    async def _chunk(
        self,
        session: object,
        ctx: types.SimpleNamespace,
        params: aiohttp.TraceRequestChunkSentParams,
    ) -> None:
        text = params.chunk.decode("utf-8", "replace")
        for name in ("refreshToken", "secret", "key"):
            marker = f'"{name}":"'
            if marker in text:
                self.values.add(text.split(marker, 1)[1].split('"', 1)[0])


def _texts(record: logging.LogRecord) -> Iterator[str]:
    yield record.getMessage()
    yield str(record.msg)
    args = record.args if isinstance(record.args, tuple) else (record.args,)
    for arg in args or ():
        yield repr(arg)
        yield str(arg)
    if record.exc_info and record.exc_info[1] is not None:
        yield repr(record.exc_info[1])
        yield str(record.exc_info[1])
    if record.exc_text:
        yield record.exc_text
    standard = logging.LogRecord("", 0, "", 0, "", None, None).__dict__
    for name, value in record.__dict__.items():
        if name not in standard:
            yield repr(value)


async def _flows(session: wa.Session, count: int) -> list[wa.WorkflowOutcome]:
    """``count`` full flows; with faults on, a step that fails is simply tried again."""
    outcomes: list[wa.WorkflowOutcome] = []
    for _ in range(count):
        for _attempt in range(8):
            try:
                case = await session.create_case(**PERSON)
                params = await session.create_parameters("kyc-basic", PARAMETERS)
                outcomes.append(
                    await session.run_and_wait(
                        case.id, "kyc-basic", parameters_id=params.id, timeout=20
                    )
                )
                break
            except wa.WorkflowsError:
                continue
    return outcomes


async def test_no_secret_or_personal_value_in_any_record_even_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = Sent()
    faults = Faults(error_rate=0.3, retry_after=0.05, disconnect_rate=0.05)
    # Tokens live 0.3 s: renewed before expiry (refresh) and after a 401, all along the run.
    async with Simulator(time_scale=0.02, seed=11, faults=faults, token_ttl=0.3) as sim:
        http = aiohttp.ClientSession(trace_configs=[sent.config])
        session = wa.Session(
            sim.base_url,
            wa.KeySecretAuth(sim.key, sim.secret, refresh_margin=0.1),
            allow_insecure_http=True,
            poll=FAST_POLL,
            http_session=http,
            retry=wa.RetryPolicy(base_delay=0.01, max_delay=0.05),
        )
        try:
            with caplog.at_level(logging.DEBUG):
                async with receiver(session) as url:
                    sim.add_webhook_url(url)
                    async with session:
                        outcomes = await _flows(session, 4)
                        await asyncio.sleep(0.4)  # the token expires while nobody calls
                        outcomes += await _flows(session, 4)
        finally:
            await http.close()
    assert outcomes, "no flow finished: the test proves nothing"
    stats = session.stats()
    assert stats.retries > 0 and stats.token_requests > 1  # faults really were met
    records = caplog.records
    assert any(r.name == "workflows_async.http" and r.levelno == logging.DEBUG for r in records)
    assert any("retrying" in r.getMessage() for r in records)
    assert any("token renewal" in r.getMessage() for r in records)
    secrets = {sim.key, sim.secret, *sent.values}
    assert len(secrets) > 3  # key, secret, and the tokens the session was given
    forbidden = secrets | set(PERSON.values()) | set(PARAMETERS.values())
    forbidden |= {PERSON["personal_number"].replace("-", ""), PERSON["email"].split("@")[0]}
    for record in records:
        for text in _texts(record):
            for value in forbidden:
                assert value not in text, (record.name, record.levelname, record.msg)


async def test_http_attempts_are_logged_with_template_status_attempt_and_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with stack() as s:
        case = await s.session.create_case(first_name="Ada")
        with caplog.at_level(logging.DEBUG, logger="workflows_async"):
            outcome = await s.session.run_and_wait(case.id, "kyc-basic", timeout=20)
    http = [r for r in caplog.records if r.name == "workflows_async.http"]
    run = next(r for r in http if getattr(r, "url_template", "") == "POST /workflows/run")
    assert run.levelno == logging.DEBUG
    assert run.http_status == 201 and run.attempt == 1  # type: ignore[attr-defined]
    assert run.elapsed_ms >= 0  # type: ignore[attr-defined]
    assert "POST /workflows/run -> 201" in run.getMessage()
    waits = [r for r in caplog.records if r.name == "workflows_async.waiting"]
    started = [r for r in waits if "started" in r.getMessage()]
    ended = [r for r in waits if "ended by" in r.getMessage()]
    assert [r.levelno for r in started] == [logging.DEBUG]
    assert [r.levelno for r in ended] == [logging.INFO]
    assert ended[0].channel == outcome.channel.value  # type: ignore[attr-defined]
    assert ended[0].workflow_id == outcome.workflow.id  # type: ignore[attr-defined]


async def test_refused_webhooks_are_logged_at_info_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with stack() as s, aiohttp.ClientSession() as client:
        with caplog.at_level(logging.INFO, logger="workflows_async"):
            async with client.post(s.webhook_url, data=b'{"workflowId":"x","status":"COMPLETED"}'):
                pass
            async with client.post(
                s.webhook_url, data=b"{}", headers={"JWS-SIGNATURE": "e30..c2ln"}
            ):
                pass
        stats = s.session.stats()
    refused = [r for r in caplog.records if r.name == "workflows_async.webhooks"]
    assert [r.levelno for r in refused] == [logging.INFO, logging.INFO]
    assert [getattr(r, "reason", None) for r in refused] == ["bad_signature", "bad_signature"]
    assert stats.webhooks.refused == {"bad_signature": 2}


async def test_stats_after_a_scripted_run() -> None:
    async with stack() as s:
        case = await s.session.create_case(first_name="Ada")
        outcomes = await asyncio.gather(
            *(s.session.run_and_wait(case.id, "kyc-basic", timeout=20) for _ in range(5))
        )
        await s.sim.wait_idle(timeout=10)
        stats = s.session.stats()
    assert stats.calls["POST /cases"].ok == 1
    assert stats.calls["POST /workflows/run"].ok == 5
    assert stats.calls["GET /workflows/{id}/result"].ok == 5
    assert stats.calls["POST /auth/authorize"].ok == 1
    assert stats.token_requests == 1 and stats.key_fetches == 1 and stats.retries == 0
    assert stats.waits.pending == 0 and stats.waits.finished_total == 5
    assert sum(1 for o in outcomes if o.channel is wa.Channel.WEBHOOK) == stats.waits.finished.get(
        "webhook", 0
    )
    assert stats.webhooks.accepted == s.sim.webhooks_delivered
    assert stats.webhooks.refused == {} and stats.webhooks.lost == 0
    assert stats.polls.sent == stats.call_count("GET /workflows/{id}")
    assert stats.polls.current_rate == FAST_POLL.rate and not stats.polls.paused
    for outcome in outcomes:
        if outcome.channel is wa.Channel.WEBHOOK:
            assert outcome.webhook_seen
        assert outcome.polls >= 0


async def test_lost_webhooks_are_counted_and_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with stack(faults=Faults(drop_webhooks=1.0), lost_webhook_grace=0.2) as s:
        case = await s.session.create_case(first_name="Ada")
        with caplog.at_level(logging.INFO, logger="workflows_async"):
            outcomes = await asyncio.gather(
                *(s.session.run_and_wait(case.id, "kyc-basic", timeout=20) for _ in range(4))
            )
        assert {o.channel for o in outcomes} == {wa.Channel.POLL}
        assert all(o.polls >= 1 and not o.webhook_seen for o in outcomes)
        await asyncio.sleep(0.3)  # past the grace
        stats = s.session.stats()
    assert stats.webhooks.lost == 4
    assert stats.waits.finished == {"poll": 4}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "webhooks are not arriving: is the webhook URL configured?" in warnings[0].getMessage()


async def test_no_lost_webhooks_when_they_arrive() -> None:
    async with stack(lost_webhook_grace=0.2) as s:
        case = await s.session.create_case(first_name="Ada")
        await asyncio.gather(
            *(s.session.run_and_wait(case.id, "kyc-basic", timeout=20) for _ in range(4))
        )
        await s.sim.wait_idle(timeout=10)
        await asyncio.sleep(0.3)
        assert s.session.stats().webhooks.lost == 0


async def test_timed_out_waits_are_counted() -> None:
    async with stack(faults=Faults(drop_webhooks=1.0)) as s:
        case = await s.session.create_case(first_name="Ada")
        s.sim.define("forever", WorkflowDefinition(duration=1e9))
        with pytest.raises(wa.WorkflowTimeout):
            await s.session.run_and_wait(case.id, "forever", timeout=0.5)
        stats = s.session.stats()
    assert stats.waits.timed_out == 1 and stats.waits.pending == 0


def test_workflows_log_turns_on_a_stderr_handler_at_session_creation() -> None:
    script = textwrap.dedent(
        """
        import asyncio, logging
        import workflows_async as wa

        assert not logging.getLogger("workflows_async").handlers  # nothing at import
        async def main():
            async with wa.Session(
                "http://127.0.0.1:1", wa.TokenAuth("t"), allow_insecure_http=True,
                retry=wa.RetryPolicy.none(),
            ) as session:
                try:
                    await session.get_workflow("x")
                except wa.TransportError:
                    pass
        asyncio.run(main())
        """
    )
    env = {**os.environ, "WORKFLOWS_LOG": "debug"}
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "DEBUG   workflows_async.http: GET /workflows/{id} -> cannot connect" in done.stderr
    quiet = {k: v for k, v in os.environ.items() if k != "WORKFLOWS_LOG"}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=quiet
    )
    assert done.returncode == 0 and done.stderr == ""


async def test_key_fetch_failures_are_logged_and_refusals_counted_by_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with stack(faults=Faults(key_error_rate=1.0)) as s:
        case = await s.session.create_case(first_name="Ada")
        with caplog.at_level(logging.INFO, logger="workflows_async"):
            outcome = await s.session.run_and_wait(case.id, "kyc-basic", timeout=20)
            await eventually(lambda: s.session.stats().webhooks.refused, "a refused webhook")
        stats = s.session.stats()
    assert outcome.channel is wa.Channel.POLL and not outcome.webhook_seen
    assert stats.key_fetches >= 1 and stats.webhooks.accepted == 0
    assert set(stats.webhooks.refused) == {"key_unavailable"}
    keys = [r for r in caplog.records if r.name == "workflows_async.keys"]
    assert any("not available: ServerError" in r.getMessage() for r in keys)
    refused = [r for r in caplog.records if r.name == "workflows_async.webhooks"]
    assert refused and all(getattr(r, "reason", "") == "key_unavailable" for r in refused)
