"""What to do next, for the errors a CLI user meets: pure functions of an exception and the flags.

Invariants: a hint names flags, variables, commands and the server's validated short code or
permission name only, never a value the user passed (a token, a URL's credentials, case data);
no hint for an error that has nothing useful to add.
"""

from __future__ import annotations

import argparse

from .. import _env, errors
from .common import PROG

CREDENTIALS = f"check {_env.ORG_TOKEN} (or {_env.API_KEY}/SECRET)"
OUTCOME_UNKNOWN = "do not rerun blindly: see README Failure semantics"


def _url_source(args: argparse.Namespace) -> str:
    return "--base-url" if getattr(args, "base_url", None) else _env.BASE_URL


def explain(exc: BaseException, args: argparse.Namespace) -> str:
    """The one-line message for ``exc``: its own text, with the flag or a hint where one helps."""
    text = str(exc)
    if isinstance(exc, errors.ConfigurationError) and text.startswith("base_url"):
        text = _url_source(args) + text.removeprefix("base_url")
        text = text.replace("Pass allow_insecure_http=True", "Pass --insecure-http")
        return text
    found = hint(exc, args)
    return f"{text}; hint: {found}" if found else text


def hint(exc: BaseException, args: argparse.Namespace) -> str | None:
    """What to do about ``exc``, or None."""
    if isinstance(exc, errors.OutcomeUnknownError):
        return OUTCOME_UNKNOWN
    if isinstance(exc, errors.AuthenticationError):
        if getattr(args, "token", None) or getattr(args, "api_key", None):
            return "check --token (or --api-key/--api-secret)"
        return CREDENTIALS
    if isinstance(exc, errors.PermissionDeniedError):
        if exc.permission:
            return f"the token lacks permission {exc.permission}"
        return "the token lacks a permission this call needs"
    if isinstance(exc, errors.APIError) and exc.code == "result_not_ready":
        wid = exc.workflow_id or getattr(args, "workflow_id", None)
        resume = f": {PROG} wait {wid}" if wid else ""
        return f"the workflow has not finished yet; wait for it{resume}"
    if isinstance(exc, errors.NotFoundError):
        return "check the id (and --definition): the API does not know it"
    if isinstance(exc, errors.TransportError):
        return f"check {_url_source(args)}: is the API running and reachable?"
    return None
