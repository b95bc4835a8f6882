"""Checks on the URLs the library is pointed at: the API's base URL, and whether a URL is local.

Invariant: a base URL is absolute, carries no credentials, query or fragment, and is
``https://`` unless the caller opted out (``allow_insecure_http``); "local" means the host is
``localhost`` or a loopback address, never a name that merely resolves to one.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = ["check_base_url", "is_local_host", "is_local_url"]


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
    return is_local_host(urlsplit(url).hostname or "")


def is_local_host(host: str) -> bool:
    """True for ``localhost`` or a loopback address (``127.0.0.1``, ``::1``), as a bind address
    or a URL's host (without brackets)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
