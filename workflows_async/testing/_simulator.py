"""`Simulator`: a stateful fake of the Workflows API on a real localhost socket.

Invariants: all pending status transitions live in one heap driven by ONE timer handle (never a
task per workflow), and reads apply due transitions first, so a status read is never behind the
clock; the background work (timer, deliveries, client session) lives exactly as long as the app
is served, whether by ``async with Simulator()`` or by ``web.run_app(sim.app)``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Self

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from ._app import Backend, ScheduledFault, build_app
from ._control import add_control_routes
from ._faults import Dice, Faults
from ._records import RecordLog, RequestRecord, WebhookAttempt
from ._signing import KeyRing
from ._state import (
    BUILTIN_DEFINITIONS,
    SimState,
    WorkflowDefinition,
    WorkflowInfo,
    WorkflowsView,
)
from ._tokens import TokenStore
from ._webhooks import WebhookDispatcher

__all__ = ["Simulator"]


class Simulator:
    """A fake Workflows API: ``async with Simulator() as sim: ... sim.base_url ...``.

    Simulated durations (workflow ``duration``, webhook retry interval and timeout) are
    multiplied by ``time_scale``; ``token_ttl``, ``Faults`` seconds and ``Retry-After`` are not.
    ``log_limit`` keeps only the newest records in ``requests`` and ``webhook_attempts`` (None,
    the default, keeps all: set it for a Simulator that runs for hours). ``control=True`` adds
    the localhost-only control endpoint (``GET``/``POST /_control/faults``,
    ``POST /_control/workflows/{id}/complete``) that ``workflows-async simulate`` serves.
    Choices where the vendor's docs are silent: creating POSTs answer 201; a result asked for
    before the final status is a 409 ``result_not_ready``; the key endpoint needs no token (it
    serves public keys) and wants ``?pem=true``; no webhook announces the status the run response
    already carries (unless ``Faults.webhook_before_response``), except a ``terminal_on_run``
    final status, announced right after the response. The README's "Testing with the
    Simulator" section has the rest.

    Today's API: `organization_token` mints ``tot_...`` tokens (sent without ``Bearer``; access
    tokens from ``/auth/authorize`` only with it), optionally limited to scopes (a missing one is
    a 403 naming it); ``Accept: ...;version=2`` runs workflows for records (`define_table`;
    ``customers`` is built in), an unsupported version is a 406; ``POST /workflows`` starts an
    execution (``RUNNING``, then the definition's later statuses, with the same webhooks).
    """

    def __init__(
        self,
        *,
        key: str = "test-key",
        secret: str = "test-secret",  # noqa: S107 - a test credential, by design
        definitions: Mapping[str, WorkflowDefinition] | None = None,
        webhook_urls: Sequence[str] = (),
        time_scale: float = 1.0,
        token_ttl: float = 3600.0,
        refresh_token_ttl: float | None = None,
        webhook_retry_interval: float = 5.0,
        webhook_timeout: float = 10.0,
        webhook_retries: int = 5,
        webhook_concurrency: int = 100,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        faults: Faults | None = None,
        signing_key: RSAPrivateKey | None = None,
        log_limit: int | None = None,
        control: bool = False,
    ) -> None:
        for name, value in {
            "time_scale": time_scale,
            "token_ttl": token_ttl,
            "webhook_timeout": webhook_timeout,
            "refresh_token_ttl": token_ttl if refresh_token_ttl is None else refresh_token_ttl,
        }.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(webhook_retry_interval) and webhook_retry_interval >= 0):
            raise ValueError("webhook_retry_interval must be finite and >= 0")
        if webhook_retries < 0 or webhook_concurrency < 1:
            raise ValueError("webhook_retries must be >= 0 and webhook_concurrency >= 1")
        self.key, self.secret = key, secret
        self._time_scale, self._host, self._port = time_scale, host, port
        self._faults = faults if faults is not None else Faults()
        self._dice = Dice(seed)
        self._keys = KeyRing(signing_key)
        self._urls: list[str] = []
        for url in webhook_urls:
            self.add_webhook_url(url)
        self._state = SimState(
            definitions={**BUILTIN_DEFINITIONS, **(definitions or {})}, time_scale=time_scale
        )
        self._tokens = tokens = TokenStore(
            key=key,
            secret=secret,
            token_ttl=token_ttl,
            refresh_token_ttl=refresh_token_ttl or max(24 * token_ttl, 86400.0),
        )
        self._dispatcher = WebhookDispatcher(
            keys=self._keys,
            faults=lambda: self._faults,
            dice=self._dice,
            urls=lambda: self._urls,
            on_change=self._notify,
            timeout=webhook_timeout * time_scale,
            retry_interval=webhook_retry_interval * time_scale,
            retries=webhook_retries,
            concurrency=webhook_concurrency,
            log_limit=log_limit,
        )
        self.requests: list[RequestRecord] = RecordLog(log_limit)
        """Every request received, in the order they were answered."""
        self.calls_by_route: Counter[str] = Counter()
        """Requests per route, e.g. ``calls_by_route["POST /workflows/run"]``."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        self._changed: asyncio.Event | None = None
        self._backend = backend = Backend(
            state=self._state,
            tokens=tokens,
            keys=self._keys,
            dice=self._dice,
            faults=lambda: self._faults,
            dispatcher=self._dispatcher,
            advance=self._advance,
            scheduled=self._scheduled,
            requests=self.requests,
            calls_by_route=self.calls_by_route,
        )
        self._org_tokens, self._tables = backend.org_tokens, backend.tables
        self._app = build_app(backend, self._lifecycle, self._on_shutdown)
        if control:
            add_control_routes(self._app, self)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> Self:
        """Serve on ``host:port`` (port 0: a free one); see `base_url`."""
        if self._runner is not None or self._closed:
            raise RuntimeError("a Simulator starts once; make a new one")
        self._runner = runner = web.AppRunner(
            self._app, handle_signals=False, access_log=None, shutdown_timeout=2.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await self.close()
            raise
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        """Stop serving and cancel every transition timer and webhook delivery. Idempotent."""
        if self._closed:
            return
        self._closed, self._base_url = True, None
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        await self._dispatcher.start()
        self._advance()
        yield
        self._disarm()
        self._loop = None
        await self._dispatcher.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._disarm()
        self._dispatcher.cancel()

    # -- the one scheduler -----------------------------------------------------------------------
    def _scheduled(self, due: float) -> None:
        if self._loop is not None and due < self._timer_due:
            self._arm(due)

    def _arm(self, due: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._loop.call_later(max(0.0, due - time.monotonic()), self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due = None, math.inf

    def _on_timer(self) -> None:
        self._timer, self._timer_due = None, math.inf
        self._advance()

    def _advance(self) -> None:
        for transition in self._state.advance():
            self._dispatcher.submit(transition)
        due = self._state.next_due()
        if due is not None and self._loop is not None and due < self._timer_due:
            self._arm(due)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- public surface ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` while started by `start` / ``async with``."""
        if self._base_url is None:
            raise RuntimeError("the Simulator is not serving; use 'async with Simulator()'")
        return self._base_url

    @property
    def app(self) -> web.Application:
        """The aiohttp application, e.g. for ``web.run_app(sim.app)`` (use one way, not both)."""
        return self._app

    @property
    def faults(self) -> Faults:
        """The live fault knobs; change fields at any time, or assign a new `Faults`."""
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults = value

    @property
    def time_scale(self) -> float:
        return self._time_scale

    @property
    def definitions(self) -> Mapping[str, WorkflowDefinition]:
        """Known workflow definitions by id (built-ins included), read-only."""
        return MappingProxyType(self._state.definitions)

    def define(self, definition_id: str, definition: WorkflowDefinition) -> None:
        """Add or replace a definition; workflows already running keep the one they started with."""
        if not isinstance(definition, WorkflowDefinition) or not definition_id:
            raise TypeError("define(definition_id: str, definition: WorkflowDefinition)")
        self._state.definitions[definition_id] = definition

    def organization_token(self, scopes: Iterable[str] | None = None) -> str:
        """Mint an organization token (``tot_...``), sent as the whole Authorization header.

        ``scopes``: None for every permission; else names such as ``"can_run"`` (on every
        definition) or ``"can_run:kyc-basic"`` (on one); the permissions checked are
        ``can_run`` (definition), ``can_view_workspace``, ``can_create_records`` and
        ``can_view_records`` (table). A missing one is a 403 naming it."""
        return self._org_tokens.mint(scopes)

    def revoke_organization_token(self, token: str) -> None:
        """From now on ``token`` is refused with 401."""
        self._org_tokens.revoke(token)

    def define_table(self, table_id: str, fields: Iterable[str] | None = None) -> None:
        """Add a records table (``customers`` is built in); ``fields`` None accepts any field."""
        self._tables.define(table_id, fields)

    @property
    def webhook_urls(self) -> tuple[str, ...]:
        return tuple(self._urls)

    def add_webhook_url(self, url: str) -> None:
        """Send webhooks of later status changes to ``url`` too (adding twice does nothing)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError("a webhook URL must start with http:// or https://")
        if url not in self._urls:
            self._urls.append(url)

    def remove_webhook_url(self, url: str) -> None:
        """Stop sending webhooks to ``url`` (unknown URLs are ignored)."""
        if url in self._urls:
            self._urls.remove(url)

    @property
    def kid(self) -> str:
        """The kid of the key that signs webhooks now."""
        return self._keys.kid

    @property
    def private_key(self) -> RSAPrivateKey:
        return self._keys.private_key

    def public_key_pem(self, kid: str | None = None) -> str:
        """The PEM the key endpoint serves for ``kid`` (default: the current signer)."""
        pem = self._keys.pem(self._keys.kid if kid is None else kid)
        if pem is None:
            raise KeyError(kid)
        return pem

    def rotate_key(
        self, key: RSAPrivateKey | None = None, *, publish_delay: float | None = None
    ) -> str:
        """Sign with ``key`` (default: a new one) under a new kid; old kids stay served.

        The new kid signs at once; the key endpoint serves it only ``publish_delay`` seconds
        later (default: ``faults.key_publish_delay``, usually 0) and answers 404 for it until then.
        """
        delay = self._faults.key_publish_delay if publish_delay is None else publish_delay
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"publish_delay must be finite and >= 0, got {delay!r}")
        return self._keys.rotate(key, publish_delay=delay)

    def publish_key(self, kid: str | None = None) -> None:
        """Serve ``kid`` (default: the current signer) now, ending its publish delay early."""
        self._keys.publish(self._keys.kid if kid is None else kid)

    def revoke_tokens(self, *, refresh_tokens: bool = True) -> None:
        """Revoke every access token issued so far (and every refresh token, unless told not to).

        Calls with an old access token get 401 ``invalid_token``, a refresh with an old refresh
        token 401 ``invalid_refresh_token``; ``/auth/authorize`` with the key and secret still
        works. ``faults.revoke_tokens_rate`` does the same at random.
        """
        self._tokens.revoke(refresh_tokens=refresh_tokens)

    @property
    def token_revocations(self) -> int:
        """How many times the tokens were revoked (by `revoke_tokens` or the fault knob)."""
        return self._tokens.revocations

    def fail_next(
        self,
        method: str,
        path: str,
        *,
        status: int = 503,
        after_effect: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests to ``method path`` with ``status``.

        ``path`` is a route template (``"/workflows/{id}"``) or an exact path. With
        ``after_effect`` the call takes effect first and only its answer is lost, e.g.
        ``sim.fail_next("POST", "/workflows/run", status=503, after_effect=True)`` is a gateway
        that answers 503 after it forwarded the run. Scheduled faults come before the random
        ones of `faults` and draw no randomness; 429 and 503 carry ``Retry-After``.
        """
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status, got {status!r}")
        if not path.startswith("/") or times < 1:
            raise ValueError("fail_next needs a path starting with '/' and times >= 1")
        for _ in range(times):
            self._backend.fail_next(method, path, ScheduledFault(status, after_effect))

    @property
    def webhook_attempts(self) -> list[WebhookAttempt]:
        """Every delivery attempt (and every dropped event), in the order they ended."""
        return self._dispatcher.attempts

    @property
    def webhooks_sent(self) -> int:
        """HTTP delivery attempts made (retries and duplicates included)."""
        return self._dispatcher.sent

    @property
    def webhooks_delivered(self) -> int:
        """Deliveries a receiver acknowledged with a 2xx (one per event, URL and copy)."""
        return self._dispatcher.delivered

    @property
    def workflows(self) -> Mapping[str, WorkflowInfo]:
        """A read-only view of every workflow, by id (snapshots made on access)."""
        self._advance()
        return WorkflowsView(self._state)

    def workflow_status(self, workflow_id: str) -> str:
        """The status of ``workflow_id`` right now; KeyError when unknown."""
        self._advance()
        return self._state.info(workflow_id).status

    async def complete(self, workflow_id: str, status: str = "COMPLETED") -> None:
        """Make ``status`` the final status now and announce it by webhook.

        Returns once that delivery ended (delivered, dropped or out of retries). Does nothing
        when the workflow already ended with ``status``. KeyError for an unknown workflow.
        """
        if (task := self._finish(workflow_id, status)) is not None:
            await asyncio.wait({task})

    def _finish(self, workflow_id: str, status: str) -> asyncio.Task[None] | None:
        """`complete` without waiting: the final status now; the task delivering its webhook."""
        self._advance()
        transition = self._state.force(workflow_id, status)
        self._notify()
        return None if transition is None else self._dispatcher.submit(transition)

    async def wait_for_webhooks(
        self,
        count: int = 1,
        *,
        workflow_id: str | None = None,
        delivered: bool = False,
        timeout: float | None = None,
    ) -> list[WebhookAttempt]:
        """Wait until at least ``count`` webhook attempts have ended and return them all.

        Counts every entry of `webhook_attempts` (retries, duplicates and dropped events
        included), only those for ``workflow_id`` when given, and only those a receiver
        acknowledged with a 2xx when ``delivered``. Woken by each attempt, no polling;
        ``TimeoutError`` after ``timeout`` seconds. With ``log_limit``, only the kept
        records count.
        """
        if self._changed is None or self._loop is None:
            raise RuntimeError("the Simulator is not serving")

        def matching() -> list[WebhookAttempt]:
            return [
                attempt
                for attempt in self._dispatcher.attempts
                if (workflow_id is None or attempt.workflow_id == workflow_id)
                and (not delivered or attempt.ok)
            ]

        async with asyncio.timeout(timeout):
            while len(found := matching()) < count:
                self._changed.clear()
                await self._changed.wait()
        return found

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no transition is scheduled and no webhook delivery is pending."""
        if self._changed is None or self._loop is None:
            raise RuntimeError("the Simulator is not serving")
        async with asyncio.timeout(timeout):
            while self._state.active or self._dispatcher.busy:
                self._changed.clear()
                await self._changed.wait()
