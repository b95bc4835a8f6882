"""Session: the API calls, over one :class:`HttpClient`, with authentication and typed answers.

Invariants: a closed Session refuses every call with :class:`SessionClosedError`; every id is
checked before it goes into a path; a 401 leads to at most one token renewal and one resend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import msgspec

from ._http import HttpClient, Response
from ._ids import check_base_url, check_path_id
from ._retry import RetryPolicy
from ._version import __version__
from .auth import Auth, KeySecretAuth, TokenAuth
from .errors import AuthenticationError, ConfigurationError, DecodeError, SessionClosedError
from .models import (
    Case,
    CaseRequest,
    Parameters,
    ParametersRequest,
    RunRequest,
    StatusSet,
    Workflow,
    WorkflowResult,
)

__all__ = ["Session"]

T = TypeVar("T")

_CASE = msgspec.json.Decoder(Case)
_PARAMETERS = msgspec.json.Decoder(Parameters)
_WORKFLOW = msgspec.json.Decoder(Workflow)
_OBJECT = msgspec.json.Decoder(dict[str, Any])
_ENCODE = msgspec.json.Encoder().encode


def _accept(api_version: int | None) -> str:
    if api_version is None:
        return "application/json"
    return f"application/json;version={api_version}"


class Session:
    """An async client of the Workflows API. Use ``async with Session(...) as session:``.

    ``base_url`` must be ``https://`` unless ``allow_insecure_http=True`` (a local Simulator).
    ``auth`` is a :class:`KeySecretAuth`, a :class:`TokenAuth` or None (no Authorization).
    ``api_version`` selects ``Accept: application/json;version=N``; ``timeout`` bounds each
    HTTP request; ``retry`` is the :class:`RetryPolicy`; ``http_session`` lets the caller
    supply (and own) the ``aiohttp.ClientSession``.
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
    ) -> None:
        self.base_url = check_base_url(base_url, allow_insecure_http=allow_insecure_http)
        if api_version is not None and (
            isinstance(api_version, bool) or not isinstance(api_version, int) or api_version < 1
        ):
            raise ConfigurationError("api_version must be a positive integer")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        self.auth = auth
        self.api_version = api_version
        self.statuses = statuses or StatusSet()
        agent = f"workflows-async/{__version__}"
        self._http = HttpClient(
            self.base_url,
            headers={
                "User-Agent": f"{user_agent} {agent}" if user_agent else agent,
                "Accept": _accept(api_version),
            },
            timeout=timeout,
            retry=retry or RetryPolicy(),
            session=http_session,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> Session:
        """A Session configured from ``WORKFLOWS_BASE_URL``, ``WORKFLOWS_API_KEY`` +
        ``WORKFLOWS_API_SECRET`` (or ``WORKFLOWS_TOKEN``) and ``WORKFLOWS_API_VERSION``.

        Keyword ``options`` are passed on to the constructor and win over the environment.
        """
        source = os.environ if env is None else env
        base_url = options.pop("base_url", None) or source.get("WORKFLOWS_BASE_URL", "")
        if "auth" not in options:
            key, secret = source.get("WORKFLOWS_API_KEY"), source.get("WORKFLOWS_API_SECRET")
            token = source.get("WORKFLOWS_TOKEN")
            if key and secret:
                options["auth"] = KeySecretAuth(key, secret)
            elif token:
                options["auth"] = TokenAuth(token)
            elif key or secret:
                raise ConfigurationError("set both WORKFLOWS_API_KEY and WORKFLOWS_API_SECRET")
            else:
                raise ConfigurationError(
                    "no credentials: set WORKFLOWS_API_KEY and WORKFLOWS_API_SECRET, "
                    "or WORKFLOWS_TOKEN"
                )
        version = source.get("WORKFLOWS_API_VERSION")
        if version and "api_version" not in options:
            if not version.isdigit():
                raise ConfigurationError("WORKFLOWS_API_VERSION must be a positive integer")
            options["api_version"] = int(version)
        return cls(base_url, **options)

    def __repr__(self) -> str:
        return f"Session(base_url={self.base_url!r}, auth={self.auth!r})"

    @property
    def closed(self) -> bool:
        return self._http.closed

    async def __aenter__(self) -> Self:
        if self.closed:
            raise SessionClosedError("the Session is closed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (unless the caller supplied it). Safe to call twice."""
        await self._http.close()

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
        return await self._call_json("POST", "/parameters", _PARAMETERS, body=encoded)

    async def run_workflow(
        self, case_id: str, workflow_definition_id: str, *, parameters_id: str | None = None
    ) -> Workflow:
        """``POST /workflows/run``: start a workflow; its status may already be terminal."""
        check_path_id(case_id, "case_id")
        if not isinstance(workflow_definition_id, str) or not workflow_definition_id:
            raise ConfigurationError("workflow_definition_id must be a non-empty string")
        if parameters_id is not None:
            check_path_id(parameters_id, "parameters_id")
        body = RunRequest(
            case_id=case_id,
            workflow_definition_id=workflow_definition_id,
            parameters_id=parameters_id,
        )
        return await self._call_json("POST", "/workflows/run", _WORKFLOW, body=_ENCODE(body))

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
        response = await self._call(
            "GET", path, params={"pem": "true"}, accept="text/plain, application/json"
        )
        return response.body.decode("utf-8", errors="replace")

    # -- plumbing -------------------------------------------------------------------------

    async def _call_json(
        self, method: str, path: str, decoder: msgspec.json.Decoder[T], *, body: bytes | None = None
    ) -> T:
        response = await self._call(method, path, body=body)
        try:
            return decoder.decode(response.body)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"{method} {path}: unexpected answer ({exc})") from None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
    ) -> Response:
        if self.closed:
            raise SessionClosedError("the Session is closed")
        auth = self.auth
        token = await auth.token(self._http) if auth is not None else None
        try:
            return await self._http.request(
                method, path, body=body, bearer=token, params=params, accept=accept
            )
        except AuthenticationError:
            if auth is None or token is None or not await auth.on_unauthorized(self._http, token):
                raise
        token = await auth.token(self._http)
        return await self._http.request(
            method, path, body=body, bearer=token, params=params, accept=accept
        )
