"""Checks on values that go into a URL or a request before anything is sent.

Invariant: only ids made of letters, digits, ``-`` and ``_`` (1-128 characters) ever go into a
URL path, so a value like ``../auth`` can never reach the server as a path.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = ["check_base_url", "check_path_id", "is_local_url"]

_PATH_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def check_path_id(value: object, what: str) -> str:
    """``value`` if it is safe as one URL path segment, else :class:`ConfigurationError`."""
    if not isinstance(value, str) or _PATH_ID.fullmatch(value) is None:
        raise ConfigurationError(
            f"{what} must be 1-128 letters, digits, '-' or '_' (got an unusable value)"
        )
    return value


def check_base_url(url: object, *, allow_insecure_http: bool) -> str:
    """The base URL without a trailing slash; ``http://`` only when explicitly allowed."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError("base_url is required (or set WORKFLOWS_BASE_URL)")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError("base_url must be an absolute https:// URL")
    if parts.scheme == "http" and not allow_insecure_http:
        raise ConfigurationError(
            "base_url uses plain http://; the API is HTTPS only. Pass allow_insecure_http=True "
            "for a local simulator or tests"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError("base_url must not carry credentials, a query or a fragment")
    return url.rstrip("/")


def is_local_url(url: str) -> bool:
    """True when the URL's host is localhost or a loopback address."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
