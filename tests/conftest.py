"""Shared fixtures. The Simulator fixture (``workflows_simulator``) comes from the package's
pytest plugin, registered here too so the suite works without the entry point installed."""

from __future__ import annotations

import pytest

# pytest_plugins set below once the plugin lands

BASE = "https://api.example.test"


@pytest.fixture
def base_url() -> str:
    return BASE
