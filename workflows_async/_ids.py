"""Checks on ids that go into a URL path before anything is sent.

Invariant: only ids made of letters, digits, ``-`` and ``_`` (1-128 characters) ever go into a
URL path, so a value like ``../auth`` can never reach the server as a path.
"""

from __future__ import annotations

import re

from .errors import ConfigurationError

__all__ = ["check_path_id"]

_PATH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def check_path_id(value: object, what: str) -> str:
    """``value`` if it is safe as one URL path segment, else :class:`ConfigurationError`."""
    if not isinstance(value, str) or _PATH_ID.fullmatch(value) is None:
        raise ConfigurationError(
            f"{what} must be 1-128 letters, digits, '-' or '_' (got an unusable value)"
        )
    return value
