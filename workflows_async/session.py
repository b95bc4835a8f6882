"""Session: the API calls, ``run_and_wait``/``wait``, and the webhook sub-app.

Invariants: a closed Session refuses every call with :class:`SessionClosedError`; every id is
checked before it goes into a path; a POST that may have taken effect is never resent (the
HTTP client raises :class:`OutcomeUnknownError`, completed here with the ids known); an id in a
2xx run answer is never thrown away; one deadline covers a whole wait, and a timeout always
names the workflow it was waiting for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar, overload
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp import web

from . import _env, _logging, _otel
from ._deadlines import DEFAULT_WAIT_TIMEOUT, Deadlines, WaitScope, check_wait_timeout
from ._http import DEFAULT_MAX_RESPONSE_BODY, HttpClient, Response
from ._ids import check_path_id
from ._metrics import Recorder, WaitHandle
from ._options import (
    SessionOptions,
    WebhookKeywords,
    WebhookSettings,
    check_options,
    webhook_settings,
)
from ._pending_wait import PendingWait
from ._result_fetch import fetch_with_retries
from ._retry import RetryPolicy
from ._urls import check_base_url, is_local_url
from ._v2_calls import V2Calls, run_request
from ._version import __version__
from .asgi import WebhookASGIApp
from .auth import Auth, auth_from_env
from .bus import Bus, InMemoryBus
from .engine import WaitEngine
from .errors import (
    ConfigurationError,
    DecodeError,
    OutcomeUnknownError,
    SessionClosedError,
    WorkflowFailed,
    WrongEventLoopError,
)
from .events import WebhookEvent
from .executions import Execution, ExecutionOutcome
from .hooks import EventCallback
from .keys import KeyStore, WebhookVerifier
from .models import (
    Case,
    CaseRequest,
    Channel,
    Parameters,
    ParametersRequest,
    Workflow,
    WorkflowOutcome,
    WorkflowResult,
)
from .polling import PollPolicy
from .registry import Completion
from .stats import Stats
from .statuses import StatusSet
from .webhooks import WebhookCore, WebhookReceiver

if TYPE_CHECKING:  # Unpack for **kwargs is in typing from Python 3.12; type checkers only
    from typing_extensions import Unpack

__all__ = ["Session", "SessionOptions"]

T = TypeVar("T")
log = logging.getLogger("workflows_async")

_CASE = msgspec.json.Decoder(Case)
_PARAMETERS = msgspec.json.Decoder(Parameters)
_WORKFLOW = msgspec.json.Decoder(Workflow)
_EXECUTION = msgspec.json.Decoder(Execution)
_OBJECT = msgspec.json.Decoder(dict[str, Any])
_ANY = msgspec.json.Decoder()
# Signing-key fetches have their own small pool, so slow API calls never hold them up.
_KEY_CONNECTIONS = 4
_KEY_BODY_LIMIT = 64 << 10
_ENCODE = msgspec.json.Encoder().encode


def _accept(api_version: int | None) -> str:
    if api_version is None:
        return "application/json"
    return f"application/json;version={api_version}"


class Session(V2Calls):
    """An async client of the Workflows API. Use ``async with Session(...) as session:``.

    ``base_url`` must be ``https://`` unless ``allow_insecure_http=True`` (a local Simulator).
    ``auth`` is a :class:`KeySecretAuth`, a :class:`TokenAuth` or None (no Authorization).
    ``api_version`` selects ``Accept: application/json;version=N``; ``timeout`` bounds each
    HTTP request; ``retry`` is the :class:`RetryPolicy`; ``http_session`` lets the caller
    supply (and own) the ``aiohttp.ClientSession``.

    Waiting: ``poll`` is the :class:`PollPolicy`; ``bus`` shares webhook events between
    processes (default: in this process only; see :class:`workflows_async.RedisBus`);
    ``statuses`` decides which statuses end a workflow. ``webhooks`` is the
    :class:`WebhookSettings` (signature verification, pinned keys, body limit); the older
    keywords ``verify_webhooks``, ``force_unverified``, ``webhook_keys``, ``fetch_webhook_keys``,
    ``webhook_algorithms``, ``max_webhook_body`` and ``lost_webhook_grace`` still work, each
    one mapped onto its field, but not together with ``webhooks``.

    ``max_response_body`` (bytes, default 16 MiB) caps every answer's body: a larger one is not
    read and raises :class:`ResponseTooLargeError`. Signing keys are fetched through a small
    connection pool of their own, so slow API calls never hold up a webhook's verification.

    Observability: :meth:`stats` counts what the Session did; records go to the
    ``workflows_async`` loggers (``WORKFLOWS_LOG=debug|info`` adds a stderr handler).
    ``opentelemetry``: spans and metrics through OpenTelemetry (None: when the ``otel`` extra
    is installed; False: never; True: required), on ``tracer_provider``/``meter_provider``
    (default: the global ones).
    """

    def __init__(
        self,
        base_url: str,
        auth: Auth | None = None,
        *,
        api_version: int | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        http_session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        user_agent: str | None = None,
        statuses: StatusSet | None = None,
        poll: PollPolicy | None = None,
        bus: Bus | None = None,
        webhooks: WebhookSettings | None = None,
        max_response_body: int = DEFAULT_MAX_RESPONSE_BODY,
        opentelemetry: bool | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        **webhook_keywords: Unpack[WebhookKeywords],
    ) -> None:
        self._webhooks = settings = webhook_settings(webhooks, webhook_keywords)
        self.base_url = check_base_url(base_url, allow_insecure_http=allow_insecure_http)
        _logging.setup_from_env()
        self._recorder = _recorder(
            self.base_url, opentelemetry, tracer_provider, meter_provider, settings.lost_grace
        )
        if api_version is not None and (
            isinstance(api_version, bool) or not isinstance(api_version, int) or api_version < 1
        ):
            raise ConfigurationError("api_version must be a positive integer")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        if isinstance(max_response_body, bool) or not isinstance(max_response_body, int):
            raise ConfigurationError("max_response_body must be a positive integer")
        if max_response_body < 1:
            raise ConfigurationError("max_response_body must be a positive integer")
        self.api_version = api_version
        self.statuses = statuses or StatusSet()
        agent = f"workflows-async/{__version__}"
        headers = {
            "User-Agent": f"{user_agent} {agent}" if user_agent else agent,
            "Accept": _accept(api_version),
        }
        self._http = HttpClient(
            self.base_url,
            headers=headers,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            session=http_session,
            auth=auth,
            max_response_body=max_response_body,
            recorder=self._recorder,
        )
        # Its aiohttp session is made at the first key fetch; it never sends the credentials.
        self._keys_http = HttpClient(
            self.base_url,
            headers=headers,
            timeout=timeout,
            retry=RetryPolicy.none(),
            max_response_body=min(max_response_body, _KEY_BODY_LIMIT),
            connection_limit=_KEY_CONNECTIONS,
            recorder=self._recorder,
        )
        if (
            not settings.verify
            and not is_local_url(self.base_url)
            and not settings.force_unverified
        ):
            raise ConfigurationError(
                "unverified webhooks (verify=False) are for a local API only; pass "
                "force_unverified=True as well to accept unsigned webhooks anyway"
            )
        self._verifier: WebhookVerifier | None = None
        if settings.verify:
            # Pinned keys mean "only these" unless fetching is asked for as well.
            fetch = not settings.keys if settings.fetch_keys is None else settings.fetch_keys
            keys = KeyStore(self._fetch_key if fetch else None, pinned=settings.keys)
            self._verifier = WebhookVerifier(keys, algorithms=settings.algorithms)
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first use
        self.poll_policy = poll or PollPolicy()
        self._waiting = WaitEngine(
            statuses=self.statuses,
            policy=self.poll_policy,
            bus=bus or InMemoryBus(),
            poll=self._poll_workflow,
            recorder=self._recorder,
        )
        self._deadlines = Deadlines()  # of the waits in wait()

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **options: Unpack[SessionOptions]
    ) -> Session:
        """A Session configured from ``WORKFLOWS_BASE_URL``, the credentials and
        ``WORKFLOWS_API_VERSION`` (the rules are in ``_env``, shared with the CLI).

        Credentials, first found wins: an organization token in ``WORKFLOWS_ORG_TOKEN`` (or a
        ``tot_...`` value in ``WORKFLOWS_TOKEN``), then (legacy) ``WORKFLOWS_API_KEY`` +
        ``WORKFLOWS_API_SECRET``, then a JWT access token in ``WORKFLOWS_TOKEN``. Keyword
        ``options`` are passed on to the constructor and win over the environment; an unknown
        one raises :class:`ConfigurationError` (and is a type error: see ``SessionOptions``).
        """
        check_options(options)
        source = os.environ if env is None else env
        base_url = options.get("base_url") or _env.base_url(source)
        settings: dict[str, Any] = {k: v for k, v in options.items() if k != "base_url"}
        if "auth" not in settings:
            settings["auth"] = auth_from_env(source)
        if "api_version" not in settings and (version := _env.api_version(source)) is not None:
            settings["api_version"] = version
        return cls(base_url, **settings)

    def __repr__(self) -> str:
        return f"Session(base_url={self.base_url!r}, auth={self.auth!r})"

    @property
    def webhooks(self) -> WebhookSettings:
        """The webhook settings in use (frozen; other settings need another Session)."""
        return self._webhooks

    def stats(self) -> Stats:
        """A snapshot of what this Session has done so far: calls by endpoint template and
        status class, retries, token requests, key fetches, webhooks, waits and polls."""
        return self._recorder.snapshot()

    @property
    def auth(self) -> Auth | None:
        """The authentication this Session sends with every API call."""
        return self._http.auth

    @property
    def closed(self) -> bool:
        return self._http.closed

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Attach to the bus and start the poll scheduler now (``async with`` does it).

        Without it they start at the first wait or webhook; with a :class:`RedisBus`, starting
        early subscribes this process before events begin to flow."""
        self._check_usable()
        await self._waiting.start()

    def _check_usable(self) -> None:
        """Refuse a closed Session, and one used from another event loop than its first."""
        if self._http.closed:
            raise SessionClosedError("the Session is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise WrongEventLoopError(
                "this Session was first used in another event loop and cannot be used in "
                "this one (e.g. a module-level Session reused across asyncio.run calls): "
                "open one Session per event loop, inside the coroutine that asyncio.run runs "
                "or in your worker's start-up hook"
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Fail every pending wait with :class:`SessionClosedError`, stop polling, close the bus
        and the HTTP session (unless the caller supplied it). Safe to call twice."""
        if self._loop is not None and not self.closed:
            self._check_usable()  # its connections belong to that loop
        await self._waiting.close()
        self._deadlines.close()
        await self._http.close()
        await self._keys_http.close()

    # -- the API calls -------------------------------------------------------------------

    async def create_case(
        self,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        personal_number: str | None = None,
        email: str | None = None,
        company_name: str | None = None,
        company_number: str | None = None,
        company_address: str | None = None,
    ) -> Case:
        """``POST /cases``: create the case (end user) a workflow runs for."""
        body = CaseRequest(
            first_name=first_name,
            last_name=last_name,
            personal_number=personal_number,
            email=email,
            company_name=company_name,
            company_number=company_number,
            company_address=company_address,
        )
        return await self._call_json("POST", "/cases", _CASE, body=_ENCODE(body))

    async def create_parameters(
        self, workflow_definition_id: str, parameters: Mapping[str, Any]
    ) -> Parameters:
        """``POST /parameters``: a parameter set for a workflow definition."""
        if not isinstance(workflow_definition_id, str) or not workflow_definition_id:
            raise ConfigurationError("workflow_definition_id must be a non-empty string")
        if not isinstance(parameters, Mapping):
            raise ConfigurationError("parameters must be a mapping (a JSON object)")
        body = ParametersRequest(
            workflow_definition_id=workflow_definition_id, parameters=dict(parameters)
        )
        try:
            encoded = _ENCODE(body)
        except (TypeError, msgspec.EncodeError) as exc:
            raise ConfigurationError(f"parameters cannot be sent as JSON: {exc}") from None
        known = {"workflow_definition_id": workflow_definition_id}
        return await self._call_json("POST", "/parameters", _PARAMETERS, body=encoded, known=known)

    async def run_workflow(
        self,
        case_id: str | None = None,
        workflow_definition_id: str | None = None,
        *,
        record_id: str | None = None,
        parameters_id: str | None = None,
    ) -> Workflow:
        """``POST /workflows/run``: start a workflow; its status may already be terminal.

        API version 1 (the default) runs it for ``case_id``; with ``api_version=2`` pass the
        optional ``record_id`` instead (records replace cases). The wrong one for the Session's
        version is a :class:`ConfigurationError`, raised before anything is sent.

        Never resent unless it surely did not reach the API (connection never made, or 429):
        any other failure whose outcome is unknown raises :class:`OutcomeUnknownError` (see
        the README's "Failure semantics"). An answer with the workflow's id but an unreadable
        rest is kept: the :class:`Workflow` then has ``status == ""``, which is never terminal,
        so ``run_and_wait`` goes on waiting for it.
        """
        body = run_request(
            self.api_version,
            case_id,
            workflow_definition_id,
            record_id=record_id,
            parameters_id=parameters_id,
        )
        ids = {
            "case_id": case_id,
            "record_id": record_id,
            "workflow_definition_id": body.workflow_definition_id,
        }
        known = {name: value for name, value in ids.items() if value is not None}
        response = await self._call("POST", "/workflows/run", body=_ENCODE(body), known=known)
        return _started(response.body, known)

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """``GET /workflows/{id}``: the workflow's current status."""
        path = f"/workflows/{check_path_id(workflow_id, 'workflow_id')}"
        return await self._call_json("GET", path, _WORKFLOW)

    async def get_result(self, workflow_id: str) -> WorkflowResult:
        """``GET /workflows/{id}/result``: every field the server sent, none dropped."""
        path = f"/workflows/{check_path_id(workflow_id, 'workflow_id')}/result"
        data: dict[str, Any] = await self._call_json("GET", path, _OBJECT)
        return WorkflowResult(data)

    async def get_webhook_key(self, kid: str) -> str:
        """``GET /auth/webhooks/key/{kid}?pem=true``: the PEM public key for webhook signatures."""
        path = f"/auth/webhooks/key/{check_path_id(kid, 'kid')}"
        # No retries (a webhook delivery waits for the answer) and no token: the key endpoint is
        # under /auth/, and a key must be fetchable even when the credentials are in trouble.
        # It goes through its own small connection pool: a webhook delivery waiting for a key
        # must not queue behind slow API calls.
        self._check_usable()
        response = await self._keys_http.request(
            "GET", path, params={"pem": "true"}, accept="text/plain, application/json", retry=False
        )
        return response.body.decode("utf-8", errors="replace")

    async def _fetch_key(self, kid: str) -> str:
        """The key store's fetch: reported (counted, logged), then :meth:`get_webhook_key`."""
        self._recorder.key_fetch(kid)
        try:
            return await self.get_webhook_key(kid)
        except Exception as exc:
            self._recorder.key_fetch_failed(kid, type(exc).__name__)
            raise

    async def _poll_workflow(self, workflow_id: str) -> Workflow:
        """One poll for the scheduler: no retries here, the scheduler spaces and budgets them.
        Its span is a child of the wait's (the scheduler's own task is not)."""
        with self._recorder.poll_context(workflow_id):
            path = f"/workflows/{workflow_id}"
            return await self._call_json("GET", path, _WORKFLOW, retry=False)

    # -- waiting --------------------------------------------------------------------------

    # The overloads only tell type checkers that ``result`` is never None when failures raise.
    @overload
    async def run_and_wait(
        self,
        case_id: str | None = None,
        workflow_definition_id: str | None = None,
        *,
        record_id: str | None = None,
        parameters_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: Literal[True] = True,
        on_started: Callable[[Workflow], Awaitable[None] | None] | None = None,
    ) -> WorkflowOutcome[WorkflowResult]: ...

    @overload
    async def run_and_wait(
        self,
        case_id: str | None = None,
        workflow_definition_id: str | None = None,
        *,
        record_id: str | None = None,
        parameters_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: bool,
        on_started: Callable[[Workflow], Awaitable[None] | None] | None = None,
    ) -> WorkflowOutcome[WorkflowResult | None]: ...

    async def run_and_wait(
        self,
        case_id: str | None = None,
        workflow_definition_id: str | None = None,
        *,
        record_id: str | None = None,
        parameters_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: bool = True,
        on_started: Callable[[Workflow], Awaitable[None] | None] | None = None,
    ) -> WorkflowOutcome[WorkflowResult | None]:
        """Run a workflow and wait for its result, by webhook or polling, whichever is first.

        ``case_id`` (API version 1) or ``record_id`` (version 2) as for :meth:`run_workflow`.
        ``parameters`` creates a parameter set first (or pass ``parameters_id``). One
        ``timeout`` covers everything, the result fetch included; on expiry
        :class:`WorkflowTimeout` (also a ``TimeoutError``) carries the workflow id for a later
        ``wait(workflow_id)``. Once the run has answered, every error raised carries
        ``workflow_id``. A failure status raises :class:`WorkflowFailed` unless
        ``raise_on_failure=False``. Cancelling the call cancels only this local wait: the
        workflow goes on at the API.

        ``on_started(workflow)`` (a function or a coroutine function) is called once the run
        request answered, before any waiting, e.g. to persist the workflow id at once; it runs
        inside the deadline, and what it raises leaves ``run_and_wait`` as it is.
        """
        if parameters is not None and parameters_id is not None:
            raise ConfigurationError("pass parameters or parameters_id, not both")
        definition = run_request(  # every check before anything is sent
            self.api_version,
            case_id,
            workflow_definition_id,
            record_id=record_id,
            parameters_id=parameters_id,
        ).workflow_definition_id

        async def start() -> Workflow:
            pid = parameters_id
            if parameters is not None:
                pid = (await self.create_parameters(definition, parameters)).id
            return await self.run_workflow(
                case_id, definition, record_id=record_id, parameters_id=pid
            )

        return await self._start_and_wait(
            start,
            "the run request",
            timeout=timeout,
            raise_on_failure=raise_on_failure,
            definition=definition,
            on_started=on_started,
        )

    @overload
    async def execute_and_wait(
        self,
        workflow_definition_id: str,
        *,
        locale: str,
        parameters: Mapping[str, Any],
        expires_at: datetime | None = None,
        record_id: str | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: Literal[True] = True,
    ) -> ExecutionOutcome[WorkflowResult]: ...

    @overload
    async def execute_and_wait(
        self,
        workflow_definition_id: str,
        *,
        locale: str,
        parameters: Mapping[str, Any],
        expires_at: datetime | None = None,
        record_id: str | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: bool,
    ) -> ExecutionOutcome[WorkflowResult | None]: ...

    async def execute_and_wait(
        self,
        workflow_definition_id: str,
        *,
        locale: str,
        parameters: Mapping[str, Any],
        expires_at: datetime | None = None,
        record_id: str | None = None,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: bool = True,
    ) -> ExecutionOutcome[WorkflowResult | None]:
        """Start an execution (:meth:`start_execution`) and wait for its result, with exactly
        the guarantees of :meth:`run_and_wait`: one deadline, webhook or poll, whichever is
        first; :class:`WorkflowTimeout` carries the execution id for ``wait(id)``;
        :class:`WorkflowFailed` on a failure status unless ``raise_on_failure=False``.

        The outcome also holds the started ``execution``. A UI execution waits for its end user:
        to hand them ``execution.link`` first, call ``start_execution`` and then ``wait(id)``.
        """
        body = self._execution_body(
            workflow_definition_id, locale, parameters, expires_at, record_id
        )
        started: list[Execution] = []

        async def start() -> Workflow:
            execution = await self._post_execution(body, workflow_definition_id, record_id)
            started.append(execution)
            return Workflow(id=execution.id, record_id=execution.record_id, status=execution.status)

        outcome = await self._start_and_wait(
            start,
            "the execution request",
            timeout=timeout,
            raise_on_failure=raise_on_failure,
            kind="execute_and_wait",
            definition=workflow_definition_id,
        )
        return ExecutionOutcome(**msgspec.structs.asdict(outcome), execution=started[0])

    async def _start_and_wait(
        self,
        start: Callable[[], Awaitable[Workflow]],
        what: str,
        *,
        timeout: float,
        raise_on_failure: bool,
        kind: str = "run_and_wait",
        definition: str | None = None,
        on_started: Callable[[Workflow], Awaitable[None] | None] | None = None,
    ) -> WorkflowOutcome[WorkflowResult | None]:
        """The one waiting engine of every start-and-wait: ``start()`` sends the request that
        starts the workflow (run or execution) and returns its answer; then the same deadline,
        webhook-or-poll wait, result and errors, whatever started it. ``kind`` names the wait
        in logs, stats and its span; ``definition`` (the workflow definition) lets the poll
        schedule follow, and learn from, how long its workflows took before."""
        self._check_usable()
        timeout = check_wait_timeout(timeout)  # before the request that starts (and costs)
        begin = time.monotonic()
        await self.start()  # outside the wait's span: the scheduler and the bus outlive it
        with self._recorder.waiting(kind) as wait:
            scope = WaitScope(timeout, before=what)
            async with scope:
                workflow = await start()
                scope.workflow_id = check_path_id(workflow.id, "the workflow id the API returned")
                self._recorder.wait_id(wait, scope.workflow_id)
                if on_started is not None and (pending := on_started(workflow)) is not None:
                    await pending
                if self.statuses.is_terminal(workflow.status):
                    completion = Completion(workflow, Channel.RUN)
                else:
                    scheduler = self._waiting.scheduler
                    started = scheduler.clock()
                    completion = _known_ids(
                        await self._waiting.completion(
                            workflow.id, first_poll=None, definition=definition
                        ),
                        workflow,
                    )
                    if definition is not None and completion.channel is Channel.WEBHOOK:
                        scheduler.learn(definition, started, scheduler.clock())  # polls: there
                return await self._outcome(completion, begin, raise_on_failure, wait)

    @overload
    def wait(
        self,
        workflow_id: str,
        *,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: Literal[True] = True,
    ) -> Coroutine[Any, Any, WorkflowOutcome[WorkflowResult]]: ...

    @overload
    def wait(
        self,
        workflow_id: str,
        *,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: bool,
    ) -> Coroutine[Any, Any, WorkflowOutcome[WorkflowResult | None]]: ...

    def wait(
        self,
        workflow_id: str,
        *,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        raise_on_failure: bool = True,
    ) -> Coroutine[Any, Any, WorkflowOutcome[WorkflowResult | None]]:
        """Wait for a workflow started earlier or elsewhere (same rules as ``run_and_wait``).

        It returns a coroutine, as an ``async def`` would: await it, or hand it to
        ``asyncio.create_task``, ``gather`` or ``wait_for``. While pending, the caller's task
        awaits the engine's future directly and the deadline is an item in a shared timer wheel
        (one ~150-byte object per wait, see ``_pending_wait.py``)."""
        return PendingWait(self, workflow_id, timeout, raise_on_failure)

    async def _outcome(
        self, completion: Completion, start: float, raise_on_failure: bool, wait: WaitHandle
    ) -> WorkflowOutcome[WorkflowResult | None]:
        workflow = completion.workflow
        result: WorkflowResult | None = None
        failed = self.statuses.is_failure(workflow.status)
        if not failed:
            # The end is known, the result may lag (409 result_not_ready, a 404, a 5xx): fetch
            # again with backoff; the wait's deadline bounds it.
            result = await fetch_with_retries(lambda: self.get_result(workflow.id))
        event = completion.event
        polls, webhook_seen = self._recorder.wait_finished(
            wait,
            completion.channel.value,
            traceparent=event.trace_context if event is not None else None,
        )
        if failed and raise_on_failure:
            raise WorkflowFailed(workflow)
        return WorkflowOutcome(
            workflow=workflow,
            result=result,
            channel=completion.channel,
            elapsed=time.monotonic() - start,
            polls=polls,
            webhook_seen=webhook_seen,
        )

    def pending(self) -> list[str]:
        """The ids of the workflows this process is waiting for right now."""
        return self._waiting.pending()

    # -- webhooks -------------------------------------------------------------------------

    def webhook_core(self, *, read_timeout: float = 10.0) -> WebhookCore:
        """The framework-free webhook receiver: ``await core.receive(method, headers, body)``
        returns a :class:`WebhookAnswer` (``status``, ``body``, ``headers``) to send back.

        Every adapter uses it (``webhook_app``, ``webhook_asgi``, a Django view, a sync
        framework through :class:`BlockingWebhookReceiver`): size limit, signature header
        before the body, read deadline (``read_timeout`` seconds: 408), verification, parsing,
        the cluster-wide claim and publishing, and an answer that is never 500.
        """
        if self.closed:
            raise SessionClosedError("the Session is closed")
        if self._verifier is None:
            log.warning("webhook signatures are NOT verified: local development only")
        self._recorder.receiver_mounted = True  # webhooks are expected: lost ones count
        return WebhookCore(
            self._verifier,
            self._publish_event,
            publish_now=self._publish_event_now,
            max_body=self._webhooks.max_body,
            read_timeout=read_timeout,
            recorder=self._recorder,
        )

    async def _publish_event(self, event: WebhookEvent) -> bool:
        self._check_usable()
        return await self._waiting.publish(event)

    def _publish_event_now(self, event: WebhookEvent) -> str | None:
        """:meth:`_publish_event` without awaiting, when it can answer so (see
        ``WaitEngine.publish_now``); None for a Session not yet used in this event loop, used
        in another one, or closed (close() closes the engine first, which then answers None):
        :meth:`_publish_event` then refuses (or records the loop)."""
        if self._loop is not asyncio.get_running_loop():
            return None
        return self._waiting.publish_now(event)

    def webhook_app(self, *, read_timeout: float = 10.0) -> web.Application:
        """The webhook receiver as an aiohttp sub-app: ``app.add_subapp("/webhooks", ...)``.

        It answers at ``/webhooks`` and ``/webhooks/`` alike. A body not received within
        ``read_timeout`` seconds is refused (408). For FastAPI, Starlette and other ASGI
        frameworks use :meth:`webhook_asgi`: this app, called as an ASGI app, raises
        :class:`ConfigurationError` saying so.
        """
        core = self.webhook_core(read_timeout=read_timeout)
        return WebhookReceiver.from_core(core).app()

    def webhook_asgi(self, *, read_timeout: float = 10.0) -> WebhookASGIApp:
        """The webhook receiver as a plain ASGI 3 app, for FastAPI, Starlette, Quart, Litestar
        or Django's ASGI router: ``app.mount("/webhooks", session.webhook_asgi())``. Same path
        and answers as :meth:`webhook_app`; it answers at the mount point, with or without a
        trailing slash (as the framework routes it)."""
        return WebhookASGIApp(self.webhook_core(read_timeout=read_timeout))

    @overload
    def on_event(
        self, callback: EventCallback, *, once: bool = False, name: str | None = None
    ) -> EventCallback: ...

    @overload
    def on_event(
        self, callback: None = None, *, once: bool = False, name: str | None = None
    ) -> Callable[[EventCallback], EventCallback]: ...

    def on_event(
        self,
        callback: EventCallback | None = None,
        *,
        once: bool = False,
        name: str | None = None,
    ) -> EventCallback | Callable[[EventCallback], EventCallback]:
        """Call ``callback(event)`` (sync or async) for every verified webhook event, off the
        acknowledgement path. ``once=True``: once per event across every process on the bus,
        claimed under ``name`` (default ``module.qualname``; it must be unique and stable
        across deployments). Usable as ``session.on_event(fn)`` or as a decorator
        ``@session.on_event(once=True)``.
        """

        def register(fn: EventCallback) -> EventCallback:
            self._waiting.hooks.add(fn, once=once, name=name)
            return fn

        return register if callback is None else register(callback)

    # -- plumbing -------------------------------------------------------------------------

    async def _call_json(
        self,
        method: str,
        path: str,
        decoder: msgspec.json.Decoder[T],
        *,
        body: bytes | None = None,
        retry: bool = True,
        known: Mapping[str, str] | None = None,
    ) -> T:
        """:meth:`_call` and the answer decoded (the HTTP client called here directly: one
        coroutine less on the path every API call takes)."""
        self._check_usable()
        try:
            response = await self._http.request(method, path, body=body, retry=retry)
        except OutcomeUnknownError as exc:
            _note_known(exc, known)
            raise
        try:
            return decoder.decode(response.body)
        except msgspec.DecodeError as exc:
            if method == "POST":  # it created something we cannot read
                raise _unknown(method, path, "its answer could not be read", known or {}) from None
            raise DecodeError(f"{method} {path}: unexpected answer ({exc})") from None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
        retry: bool = True,
        known: Mapping[str, str] | None = None,
    ) -> Response:
        """One API call; the HTTP client does the retries and the 401 flow. ``known`` holds
        what is known of a POST that creates something, put on an :class:`OutcomeUnknownError`
        """
        self._check_usable()
        try:
            return await self._http.request(
                method, path, body=body, params=params, accept=accept, retry=retry
            )
        except OutcomeUnknownError as exc:
            _note_known(exc, known)
            raise


def _note_known(exc: OutcomeUnknownError, known: Mapping[str, str] | None) -> None:
    for name, value in (known or {}).items():
        setattr(exc, name, value)


def _recorder(
    base_url: str,
    opentelemetry: bool | None,
    tracer_provider: Any,
    meter_provider: Any,
    lost_grace: float,
) -> Recorder:
    """The Session's one Recorder, with OpenTelemetry when asked for and installed."""
    otel = None
    if opentelemetry is not False:
        otel = _otel.load(tracer_provider, meter_provider)
        if otel is None and opentelemetry:
            raise ConfigurationError(
                "opentelemetry=True needs the otel extra: pip install 'workflows-async[otel]'"
            )
    where = urlsplit(base_url)
    return Recorder(
        otel=otel,
        server_address=where.hostname or "",
        server_port=where.port or (443 if where.scheme == "https" else 80),
        lost_grace=lost_grace,
    )


def _unknown(
    method: str, path: str, why: str, known: Mapping[str, str], workflow_id: str | None = None
) -> OutcomeUnknownError:
    return OutcomeUnknownError(
        f"{method} {path} was answered 2xx but {why}; it was not resent: check before "
        "sending it again",
        method=method,
        path=path,
        workflow_id=workflow_id,
        case_id=known.get("case_id"),
        record_id=known.get("record_id"),
        workflow_definition_id=known.get("workflow_definition_id"),
    )


def _started(body: bytes, known: Mapping[str, str]) -> Workflow:
    """The workflow a 2xx ``POST /workflows/run`` answer names. Read leniently: an id the
    server sent is never thrown away (the rest may be unreadable: status ``""``, not terminal);
    without a usable id the run may have started all the same: :class:`OutcomeUnknownError`."""
    try:
        workflow = _WORKFLOW.decode(body)
    except msgspec.DecodeError:
        try:
            data = _ANY.decode(body)
        except msgspec.DecodeError:
            data = None
        fields: dict[str, Any] = data if isinstance(data, dict) else {}
        found = fields.get("id")
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found)
        if not isinstance(found, str):
            raise _unknown("POST", "/workflows/run", "it holds no workflow id", known) from None
        case_id, status = fields.get("caseId"), fields.get("status")
        record_id = fields.get("recordId")
        workflow = Workflow(
            id=found,
            case_id=case_id if isinstance(case_id, str) else None,
            record_id=record_id if isinstance(record_id, str) else None,
            status=status if isinstance(status, str) else "",
        )
    try:
        check_path_id(workflow.id, "workflow id")
    except ConfigurationError:
        raise _unknown("POST", "/workflows/run", "its workflow id is unusable", known) from None
    return workflow


def _known_ids(completion: Completion, started: Workflow) -> Completion:
    """The final state with the case or record id the start answer named, when the event or
    poll that ended the wait did not carry it (e.g. a webhook without ``recordId``)."""
    final = completion.workflow
    case_id = final.case_id or started.case_id
    record_id = final.record_id or started.record_id
    if (case_id, record_id) == (final.case_id, final.record_id):
        return completion
    workflow = msgspec.structs.replace(final, case_id=case_id, record_id=record_id)
    return dataclasses.replace(completion, workflow=workflow)
