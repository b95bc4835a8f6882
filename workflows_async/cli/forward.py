"""``listen --forward-to URL``: relay each verified event to a local app, as ``stripe listen``
does.

Invariants: only the raw body goes on, with a header saying whether its signature was
verified, never the JWS (the local app cannot and need not check it); the target is on this
machine unless the caller said otherwise; every relay is bounded (a timeout, a cap on relays in
flight) and a failed one is reported on stderr, never raised: the listener keeps listening.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import TYPE_CHECKING

from .._urls import is_local_url
from .common import UsageError, warn

if TYPE_CHECKING:
    import aiohttp

    from ..events import WebhookEvent

VERIFIED_HEADER = "Workflows-Signature-Verified"
"""``true`` when the listener verified the event's signature, ``false`` under ``--no-verify``."""


def check_forward_url(url: str, *, allow_remote: bool) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("--forward-to must be an http:// or https:// URL")
    if not allow_remote and not is_local_url(url):
        raise UsageError(
            "--forward-to must point at this machine (localhost, 127.0.0.1, ::1); pass "
            "--forward-remote to relay webhook bodies elsewhere"
        )
    return url


class Forwarder:
    """Relays events to ``url``; ``forward`` is an ``on_event`` hook."""

    def __init__(
        self, url: str, *, verified: bool, timeout: float = 10.0, max_in_flight: int = 16
    ) -> None:
        self.url = url
        self.verified = verified
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_in_flight)
        self._client: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0

    async def __aenter__(self) -> Forwarder:
        import aiohttp

        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()

    async def forward(self, event: WebhookEvent) -> None:
        client = self._client
        if client is None:
            return
        headers = {
            "Content-Type": "application/json",
            VERIFIED_HEADER: "true" if self.verified else "false",
        }
        async with self._slots:
            try:
                async with client.post(self.url, data=event.raw, headers=headers) as response:
                    await response.read()
                    status = response.status
            except Exception as exc:  # timeouts, refused connections, ClientError: never crash
                self.failed += 1
                warn(f"forward {event.workflow_id} to {self.url} failed: {type(exc).__name__}")
                return
        self.sent += 1
        warn(f"forwarded {event.workflow_id} {event.status} -> {status}")
