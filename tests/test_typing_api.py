"""The public API as a type checker sees it (mypy --strict on small user snippets).

A wait with the default ``raise_on_failure=True`` gives an outcome whose ``result`` is not
Optional; ``raise_on_failure=False`` gives the Optional one; ``Session.from_env`` refuses an
unknown option, for mypy and at run time.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from typecheck import mypy_errors

import workflows_async as wa

OUTCOMES = """
import workflows_async as wa
from workflows_async import WorkflowOutcome, WorkflowResult


async def user(session: wa.Session, case: wa.Case) -> None:
    outcome = await session.run_and_wait(case.id, "kyc-basic")
    print(outcome.result["partyId"], outcome.result.data)
    waited = await session.wait("wf-1", timeout=5)
    print(waited.result.party_id)
    executed = await session.execute_and_wait("kyc-basic", locale="en", parameters={})
    print(executed.result.data, executed.execution.id)
    explicit: WorkflowOutcome[WorkflowResult] = await session.wait("wf-1", raise_on_failure=True)
    plain: WorkflowOutcome = explicit  # a bare WorkflowOutcome is the Optional one
    print(plain.result)
    maybe = await session.run_and_wait(case.id, "kyc-basic", raise_on_failure=False)
    if maybe.result is not None:
        print(maybe.result.data)
    flag = bool(case.id)
    unknown = await session.wait("wf-1", raise_on_failure=flag)
    print(unknown.succeeded)
"""

OPTIONAL_RESULT = """
import workflows_async as wa


async def user(session: wa.Session, case: wa.Case) -> None:
    outcome = await session.run_and_wait(case.id, "kyc-basic", raise_on_failure=False)
    print(outcome.result.data)
    executed = await session.execute_and_wait(
        "kyc-basic", locale="en", parameters={}, raise_on_failure=False
    )
    print(executed.result.data)
"""

FROM_ENV = """
import workflows_async as wa

good = wa.Session.from_env(timeout=5.0, poll=wa.PollPolicy(initial_delay=0.1), api_version=2)
typo = wa.Session.from_env(timout=5.0)
wrong = wa.Session.from_env(timeout="5")
"""

WEBHOOK_KEYWORDS = """
import workflows_async as wa

new = wa.Session("https://x", webhooks=wa.WebhookSettings(verify=False, force_unverified=True))
old = wa.Session("https://x", verify_webhooks=False, force_unverified=True, max_webhook_body=10)
wrong = wa.Session("https://x", max_webhook_body="10")
typo = wa.Session("https://x", verify_webhook=False)
"""


@pytest.fixture(scope="module")
def errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    directory: Path = tmp_path_factory.mktemp("typing")
    return mypy_errors(
        directory,
        {
            "outcomes": OUTCOMES,
            "optional_result": OPTIONAL_RESULT,
            "from_env": FROM_ENV,
            "webhook_keywords": WEBHOOK_KEYWORDS,
        },
    )


def test_default_waits_give_a_result_that_is_not_optional(errors: dict[str, list[str]]) -> None:
    assert errors["outcomes"] == []


def test_raise_on_failure_false_gives_an_optional_result(errors: dict[str, list[str]]) -> None:
    found = errors["optional_result"]
    assert len(found) == 2, found
    assert all('Item "None" of "WorkflowResult | None"' in line for line in found), found


def test_from_env_options_are_checked(errors: dict[str, list[str]]) -> None:
    found = errors["from_env"]
    assert len(found) == 2, found
    assert ':5: error: Unexpected keyword argument "timout"' in found[0]
    assert ":6: error: Argument" in found[1] and '"timeout"' in found[1]


def test_the_older_webhook_keywords_are_still_checked(errors: dict[str, list[str]]) -> None:
    found = errors["webhook_keywords"]
    assert len(found) == 2, found
    assert ":6: error: Argument" in found[0] and '"max_webhook_body"' in found[0]
    assert ':7: error: Unexpected keyword argument "verify_webhook"' in found[1]


def test_from_env_refuses_an_unknown_option_at_run_time() -> None:
    env = {"WORKFLOWS_BASE_URL": "https://api.example.com", "WORKFLOWS_ORG_TOKEN": "tot_x"}
    with pytest.raises(wa.ConfigurationError, match=r"'timout' \(did you mean 'timeout'\?\)"):
        wa.Session.from_env(env, timout=5.0)  # type: ignore[call-arg]


def test_session_options_are_the_constructor_keywords() -> None:
    from workflows_async._options import SessionOptions, WebhookKeywords

    parameters = inspect.signature(wa.Session.__init__).parameters
    named = {name for name, p in parameters.items() if p.kind is not p.VAR_KEYWORD}
    assert parameters["webhook_keywords"].kind is inspect.Parameter.VAR_KEYWORD
    assert set(SessionOptions.__optional_keys__) == (
        named - {"self"} | WebhookKeywords.__optional_keys__
    )


def test_outcomes_keep_their_runtime_shape() -> None:
    workflow = wa.Workflow(id="wf-1", status="FAILED")
    outcome = wa.WorkflowOutcome(workflow=workflow, result=None, channel=wa.Channel.POLL, elapsed=1)
    assert isinstance(outcome, wa.WorkflowOutcome) and not outcome.succeeded
    assert isinstance(wa.ExecutionOutcome, type) and issubclass(
        wa.ExecutionOutcome, wa.WorkflowOutcome
    )
    assert wa.WorkflowOutcome[wa.WorkflowResult] is not None  # subscriptable at run time too
