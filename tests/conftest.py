"""Shared fixtures. ``workflows_simulator`` comes from the package's pytest plugin (installed
with the package); ``redis_server`` starts a real redis-server on a free localhost port."""

from __future__ import annotations

from redis_server import redis_server

__all__ = ["redis_server"]
