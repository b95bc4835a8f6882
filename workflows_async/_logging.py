"""``WORKFLOWS_LOG=debug|info``: a readable stderr handler for the ``workflows_async`` loggers.

Invariants: the handler is added at most once per process, and only when the variable asks for
it; without the variable nothing about logging is touched (the library only emits records,
the application decides where they go). Read when the first Session is created, not at import:
an import has no side effects on logging, and a program may set the variable (or configure
logging) after importing the package but before it creates a Session.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from ._env import LOG as ENV

__all__ = ["ENV", "LOGGER", "setup_from_env"]

LOGGER = "workflows_async"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _EnvHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module added, so it is never added twice."""


def setup_from_env(env: Mapping[str, str] | None = None) -> logging.Handler | None:
    """Apply ``WORKFLOWS_LOG`` (once); returns the handler added or already there, if any."""
    logger = logging.getLogger(LOGGER)
    for handler in logger.handlers:
        if isinstance(handler, _EnvHandler):
            return handler
    value = (os.environ if env is None else env).get(ENV, "").strip().lower()
    if not value:
        return None
    level = _LEVELS.get(value)
    if level is None:
        logger.warning("%s=%r is not understood: use debug, info or warning", ENV, value[:20])
        return None
    handler = _EnvHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(level)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return handler
