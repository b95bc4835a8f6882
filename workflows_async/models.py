"""The data the API exchanges, as msgspec Structs.

Invariants: wire names are camelCase (the base Structs' ``rename="camel"``), Python names
snake_case; response models ignore unknown fields, request models are strict; a status is an
open string and never a decode error; ``repr()`` never shows personal data.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic

import msgspec

if TYPE_CHECKING:  # a TypeVar default (PEP 696) needs typing_extensions before Python 3.13;
    # it only matters to type checkers, which ship typing_extensions' stubs themselves.
    from typing_extensions import TypeVar

    R = TypeVar(
        "R",
        bound="WorkflowResult | None",
        default="WorkflowResult | None",
        covariant=True,
    )
else:
    from typing import TypeVar

    R = TypeVar("R", covariant=True)

__all__ = [
    "Case",
    "Channel",
    "Parameters",
    "Token",
    "Workflow",
    "WorkflowOutcome",
    "WorkflowResult",
]


class _Response(msgspec.Struct, rename="camel", kw_only=True):
    """Base of every response model: camelCase on the wire, unknown fields ignored."""


class _Request(
    msgspec.Struct, rename="camel", kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """Base of every request body: camelCase, strict, fields left at their default not sent."""


class Channel(enum.StrEnum):
    """How a wait learned that its workflow finished."""

    RUN = "run"
    WEBHOOK = "webhook"
    POLL = "poll"


_PERSONAL = ("first_name", "last_name", "personal_number", "email")


class _CaseFields(_Response):
    """The case fields, shared by the request and the response; personal ones masked in repr."""

    first_name: str | None = None
    last_name: str | None = None
    personal_number: str | None = None
    email: str | None = None
    company_name: str | None = None
    company_number: str | None = None
    company_address: str | None = None

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """Fields as rich (and msgspec's default) would show them, personal ones masked."""
        return [
            (name, "***" if name in _PERSONAL else value)
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not None
        ]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.__rich_repr__())
        return f"{type(self).__name__}({shown})"

    __str__ = __repr__


class Case(_CaseFields, kw_only=True):
    """A case (the end user a workflow runs for). Personal fields are masked in ``repr()``."""

    id: str


class CaseRequest(_CaseFields, omit_defaults=True, forbid_unknown_fields=True):
    """The body of ``POST /cases``: strict, fields left at None not sent."""


class Parameters(_Response):
    """A parameter set for a workflow definition."""

    id: str
    workflow_definition_id: str | None = None
    parameters: dict[str, Any] | None = None

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """The parameter names only: their values may hold personal data."""
        keys = sorted(self.parameters) if self.parameters else []
        return [
            ("id", self.id),
            ("workflow_definition_id", self.workflow_definition_id),
            ("keys", keys),
        ]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.__rich_repr__())
        return f"Parameters({shown})"

    __str__ = __repr__


class ParametersRequest(_Request):
    workflow_definition_id: str
    parameters: dict[str, Any]


class RunRequest(_Request):
    """``POST /workflows/run``: ``caseId`` in API version 1, optional ``recordId`` in 2."""

    workflow_definition_id: str
    case_id: str | None = None
    record_id: str | None = None
    parameters_id: str | None = None


class Workflow(_Response):
    """A workflow run: its id, its case (API version 1) or record (version 2, ``recordId``) and
    its status (an open string, kept as it came).

    Whether a status ends the workflow is the Session's to say (``session.statuses``, a
    :class:`~workflows_async.statuses.StatusSet`): a model alone cannot know the set in use.
    """

    id: str
    case_id: str | None = None
    record_id: str | None = None
    status: str = ""


class WorkflowResult:
    """A workflow's result. Its content depends on the workflow's configuration, so every field
    the server sent is kept: ``result.data`` holds the whole decoded object, ``result["anyKey"]``
    reads one field, and ``created_date``, ``case_id``, ``party_id`` are typed shortcuts.
    ``repr()`` shows the keys only, never the values (they hold personal data).
    """

    __slots__ = ("data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data: dict[str, Any] = dict(data)

    @property
    def created_date(self) -> str | None:
        value = self.data.get("createdDate")
        return value if isinstance(value, str) else None

    @property
    def case_id(self) -> str | None:
        value = self.data.get("caseId")
        return value if isinstance(value, str) else None

    @property
    def party_id(self) -> str | None:
        value = self.data.get("partyId")
        return value if isinstance(value, str) else None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkflowResult) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WorkflowResult(keys={sorted(self.data)})"


class Token(_Response):
    """The answer of ``/auth/authorize`` and ``/auth/refresh``. Never printed."""

    access_token: str
    refresh_token: str | None = None
    expiry_duration: float | None = None
    token_type: str | None = None

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """Never the tokens themselves."""
        return [("token_type", self.token_type), ("expiry_duration", self.expiry_duration)]

    def __repr__(self) -> str:
        return f"Token(token_type={self.token_type!r}, expiry_duration={self.expiry_duration!r})"

    __str__ = __repr__


class WorkflowOutcome(msgspec.Struct, Generic[R], frozen=True, kw_only=True):
    """What ``run_and_wait`` and ``wait`` return.

    Generic over the type of ``result``, for type checkers only: the waits return
    ``WorkflowOutcome[WorkflowResult]`` (``result`` never None) with the default
    ``raise_on_failure=True``, and ``WorkflowOutcome[WorkflowResult | None]`` (what a bare
    ``WorkflowOutcome`` means) otherwise. It is covariant: the first is also the second.

    ``workflow`` is the final state, ``result`` the workflow's result (None when it ended with
    a failure status and the caller asked for the outcome instead of an exception),
    ``channel`` how the end was learned first (``run``, ``webhook`` or ``poll``) and
    ``elapsed`` the seconds the call took. ``polls`` is how many status polls were sent for
    the workflow while it was waited for, and ``webhook_seen`` whether a webhook for its end
    reached this process by the time the call returned (False with ``channel="poll"`` and
    webhooks configured: see ``session.stats().webhooks.lost``).
    """

    workflow: Workflow
    result: R
    channel: Channel
    elapsed: float
    polls: int = 0
    webhook_seen: bool = False

    @property
    def succeeded(self) -> bool:
        return self.result is not None
