"""The Recorder, endpoint templates, the Stats snapshot and WORKFLOWS_LOG: no event loop, no I/O."""

from __future__ import annotations

import dataclasses
import io
import json
import logging

import pytest

import workflows_async as wa
from workflows_async import _logging
from workflows_async._metrics import Recorder, route, status_class
from workflows_async.models import Channel, Workflow, WorkflowOutcome

WID = "0b6f9c1e-7a42-4c1e-9d55-3f1c2b8e4a10"
KID = "8d1f3c2a-1b2c-4d5e-8f90-a1b2c3d4e5f6"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("GET", f"/workflows/{WID}", "GET /workflows/{id}"),
        ("GET", f"/workflows/{WID}/result", "GET /workflows/{id}/result"),
        ("POST", "/workflows/run", "POST /workflows/run"),
        ("POST", "/workflows", "POST /workflows"),
        ("POST", "/cases", "POST /cases"),
        ("POST", "/parameters", "POST /parameters"),
        ("POST", "/auth/authorize", "POST /auth/authorize"),
        ("GET", f"/auth/webhooks/key/{KID}", "GET /auth/webhooks/key/{kid}"),
        ("GET", f"/tables/t1/records/{WID}", "GET /tables/{table_id}/records/{id}"),
        ("GET", "/something/new?x=secret", "GET /{id}/{id}"),  # unknown: shown as values
    ],
)
def test_route_templates_never_carry_values(method: str, path: str, template: str) -> None:
    assert route(method, path) == template


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 204, 302, 404, 429, 500, 503, None)] == [
        0, 0, 1, 1, 1, 2, 2, 3,
    ]  # fmt: skip


def test_calls_by_template_and_class() -> None:
    rec = Recorder()
    call = rec.call_started("GET", f"/workflows/{WID}")
    rec.attempt(call, 503, 0.010, request_id="r-1")
    rec.retry(call, 0.25, "status 503")
    rec.attempt(call, None, 0.020, error="timed out")
    rec.retry(call, 0.5, "timed out")
    rec.attempt(call, 200, 0.005)
    rec.call_ended(call, 200)
    other = rec.call_started("POST", "/cases")
    rec.attempt(other, 400, 0.001)
    stats = rec.snapshot()
    got = stats.calls["GET /workflows/{id}"]
    assert (got.ok, got.client_errors, got.server_errors, got.transport) == (1, 0, 1, 1)
    assert got.attempts == 3 and got.failures == 2
    assert got.seconds == pytest.approx(0.035)
    assert stats.calls["POST /cases"].client_errors == 1
    assert stats.retries == 2
    assert stats.call_count() == 4 and stats.call_count("POST /cases") == 1
    assert stats.call_count("GET /nothing") == 0


def test_snapshot_is_immutable_and_detached() -> None:
    rec = Recorder()
    rec.webhook_refused(None, "bad_signature", 401, "signature does not verify")
    stats = rec.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.retries = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.webhooks.refused["bad_signature"] = 9  # type: ignore[index]
    rec.webhook_refused(None, "bad_signature", 401, "signature does not verify")
    assert stats.webhooks.refused == {"bad_signature": 1}  # taken before the second one
    assert rec.snapshot().webhooks.refused_total == 2
    assert json.loads(json.dumps(rec.snapshot().as_dict()))["webhooks"]["refused"] == {
        "bad_signature": 2
    }


def test_stats_defaults_and_exports() -> None:
    empty = wa.Stats()
    assert empty.call_count() == 0 and empty.waits.finished_total == 0
    assert isinstance(empty.polls, wa.PollStats) and isinstance(empty.webhooks, wa.WebhookStats)
    assert isinstance(empty.waits, wa.WaitStats) and wa.CallStats().attempts == 0


def test_waits_polls_and_outcome_fields() -> None:
    clock = Clock()
    rec = Recorder(clock=clock)
    handle = rec.wait_started("run_and_wait")
    rec.wait_id(handle, WID)
    rec.poll_sent(WID)
    rec.poll_sent(WID)
    rec.poll_sent("someone-elses")
    clock.now += 4.0
    assert rec.snapshot().waits.pending == 1
    polls, seen = rec.wait_finished(handle, "poll")
    assert (polls, seen) == (2, False)
    other = rec.wait_started("wait", WID)
    clock.now += 1.0
    rec.wait_failed(other, "timed_out", "WorkflowTimeout")
    stats = rec.snapshot()
    assert stats.waits.pending == 0 and stats.waits.finished == {"poll": 1}
    assert stats.waits.timed_out == 1 and stats.waits.seconds == pytest.approx(4.0)
    assert stats.polls.sent == 3


def test_polls_are_counted_per_workflow_until_its_last_local_wait_ends() -> None:
    rec = Recorder(clock=Clock())
    first, second, third = (rec.wait_started("wait", WID) for _ in range(3))
    rec.poll_sent(WID)
    assert rec.wait_finished(first, "poll")[0] == 1
    rec.poll_sent(WID)
    rec.wait_failed(second, "cancelled", "CancelledError")
    assert rec.polls_for(WID) == 2  # a wait of it is still pending
    assert rec.wait_finished(third, "poll")[0] == 2
    assert rec.polls_for(WID) == 0 and not rec._polls and not rec._more_waits
    again = rec.wait_started("wait", WID)  # a later wait counts from zero
    rec.poll_sent(WID)
    assert rec.wait_finished(again, "poll")[0] == 1


def test_poll_state_gauges_come_from_the_scheduler() -> None:
    rec = Recorder()
    rec.poll_state = lambda: (2.5, True, 7)
    rec.poll_rate_limited(5.0, 2.5)
    polls = rec.snapshot().polls
    assert (polls.current_rate, polls.paused, polls.scheduled, polls.rate_limited) == (
        2.5, True, 7, 1,
    )  # fmt: skip


def test_workflow_outcome_new_fields_have_defaults() -> None:
    workflow = Workflow(id=WID, case_id=None, status="COMPLETED")
    old_style = WorkflowOutcome(workflow=workflow, result=None, channel=Channel.RUN, elapsed=1.0)
    assert old_style.polls == 0 and old_style.webhook_seen is False
    new = WorkflowOutcome(
        workflow=workflow, result=None, channel=Channel.POLL, elapsed=1.0, polls=3
    )
    assert new.polls == 3


# -- lost webhooks -----------------------------------------------------------------------------


def test_a_webhook_within_the_grace_is_not_lost() -> None:
    clock = Clock()
    rec = Recorder(clock=clock, lost_grace=30.0)
    rec.receiver_mounted = True
    rec.polled_terminal(WID)
    clock.now += 29.0
    rec.event_delivered(WID, terminal=True)
    clock.now += 100.0
    assert rec.snapshot().webhooks.lost == 0


def test_no_webhook_within_the_grace_counts_one_lost(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rec = Recorder(clock=clock, lost_grace=30.0)
    rec.receiver_mounted = True
    rec.polled_terminal(WID)
    rec.event_delivered("another-workflow", terminal=False)  # not this one's end
    clock.now += 29.0
    assert rec.snapshot().webhooks.lost == 0
    clock.now += 2.0
    with caplog.at_level(logging.DEBUG, logger="workflows_async"):
        assert rec.snapshot().webhooks.lost == 1
    assert any("webhook lost" in r.getMessage() for r in caplog.records)
    rec.event_delivered(WID, terminal=True)  # too late: still lost, counted once
    clock.now += 100
    assert rec.snapshot().webhooks.lost == 1


def test_a_webhook_that_came_first_is_not_awaited_again() -> None:
    clock = Clock()
    rec = Recorder(clock=clock)
    rec.receiver_mounted = True
    rec.event_delivered(WID, terminal=True)  # the poll in flight lost the race
    rec.polled_terminal(WID)
    clock.now += 100
    assert rec.snapshot().webhooks.lost == 0


def test_lost_webhooks_are_counted_only_while_webhooks_are_expected() -> None:
    clock = Clock()
    rec = Recorder(clock=clock)
    rec.polled_terminal(WID)  # polling only: no receiver here, no event ever came
    clock.now += 100
    assert rec.snapshot().webhooks.lost == 0


def test_warning_once_per_interval_when_most_completions_come_by_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    rec = Recorder(clock=clock, warn_interval=300.0, warn_min=3)
    rec.receiver_mounted = True
    with caplog.at_level(logging.WARNING, logger="workflows_async"):
        for i in range(10):
            rec.polled_terminal(f"w{i}")
            clock.now += 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "webhooks are not arriving" in warnings[0].getMessage()
        clock.now += 300  # next interval: once more
        for i in range(3):
            rec.polled_terminal(f"x{i}")
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_no_warning_while_webhooks_bring_most_completions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    rec = Recorder(clock=clock)
    rec.receiver_mounted = True
    with caplog.at_level(logging.WARNING, logger="workflows_async"):
        for i in range(10):
            rec.event_delivered(f"h{i}", terminal=True)
        for i in range(5):
            rec.polled_terminal(f"p{i}")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_no_warning_without_a_receiver(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(clock=Clock())
    with caplog.at_level(logging.WARNING, logger="workflows_async"):
        for i in range(10):
            rec.polled_terminal(f"p{i}")
    assert not caplog.records


def test_lost_tracking_is_bounded() -> None:
    rec = Recorder(clock=Clock(), max_tracked=10)
    for i in range(100):
        rec.polled_terminal(f"w{i}")
    assert len(rec.lost) == 10


# -- log records -------------------------------------------------------------------------------


def test_attempt_logs_at_debug_with_fields(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    call = rec.call_started("GET", f"/workflows/{WID}")
    with caplog.at_level(logging.DEBUG, logger="workflows_async"):
        rec.attempt(call, 200, 0.0123, request_id="req-42")
    (record,) = caplog.records
    assert record.name == "workflows_async.http" and record.levelno == logging.DEBUG
    assert record.url_template == "GET /workflows/{id}"  # type: ignore[attr-defined]
    assert record.http_status == 200 and record.attempt == 1  # type: ignore[attr-defined]
    assert record.request_id == "req-42"  # type: ignore[attr-defined]
    text = record.getMessage()
    assert "GET /workflows/{id} -> 200" in text and "12.3 ms" in text and "req-42" in text


def test_attempt_takes_the_request_id_from_the_answer_only_when_it_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Headers(dict[str, str]):
        looked_up = 0

        def __contains__(self, name: object) -> bool:
            Headers.looked_up += 1
            return super().__contains__(name)

    rec = Recorder()
    call = rec.call_started("GET", f"/workflows/{WID}")
    headers = Headers({"X-Request-Id": "req-7"})
    with caplog.at_level(logging.INFO, logger="workflows_async"):
        rec.attempt(call, 200, 0.001, headers=headers)
    assert Headers.looked_up == 0 and not caplog.records  # not logged: not looked up
    with caplog.at_level(logging.DEBUG, logger="workflows_async"):
        rec.attempt(call, 200, 0.001, headers=headers)
    (record,) = caplog.records
    assert record.request_id == "req-7"  # type: ignore[attr-defined]
    assert "request id req-7" in record.getMessage()


def test_retry_and_renewal_log_at_info(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    call = rec.call_started("POST", "/workflows/run")
    rec.attempt(call, 429, 0.001)
    with caplog.at_level(logging.INFO, logger="workflows_async"):
        rec.retry(call, 2.0, "status 429")
        rec.token_request("refresh", "token expires soon")
        rec.key_fetch(KID)
    levels = {(r.name, r.levelno) for r in caplog.records}
    assert levels == {
        ("workflows_async.http", logging.INFO),
        ("workflows_async.auth", logging.INFO),
        ("workflows_async.keys", logging.INFO),
    }
    messages = [r.getMessage() for r in caplog.records]
    assert "retrying POST /workflows/run in 2.00 s (attempt 1 failed: status 429)" in messages
    assert "token renewal: refresh (token expires soon)" in messages
    snap = rec.snapshot()
    assert (snap.token_requests, snap.key_fetches) == (1, 1)


# -- WORKFLOWS_LOG -----------------------------------------------------------------------------


@pytest.fixture
def clean_logger() -> object:
    logger = logging.getLogger("workflows_async")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_workflows_log_adds_one_stderr_handler(
    clean_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    assert _logging.setup_from_env({}) is None
    handler = _logging.setup_from_env({"WORKFLOWS_LOG": "DEBUG"})
    assert handler is not None
    assert _logging.setup_from_env({"WORKFLOWS_LOG": "info"}) is handler  # once only
    assert clean_logger.level == logging.DEBUG
    logging.getLogger("workflows_async.http").debug("hello %s", "there")
    assert "DEBUG   workflows_async.http: hello there" in stream.getvalue()


def test_workflows_log_unknown_value_warns(
    clean_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="workflows_async"):
        assert _logging.setup_from_env({"WORKFLOWS_LOG": "loud"}) is None
    assert "not understood" in caplog.text
