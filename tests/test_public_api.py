"""The public surface: every name in __all__ imports, and the list is sorted."""

from __future__ import annotations

import importlib

import workflows_async


def test_all_is_sorted_and_importable() -> None:
    names = workflows_async.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(workflows_async, name) is not None


def test_submodule_all_lists_resolve() -> None:
    for module in ("errors", "models", "auth", "jws", "keys", "bus", "events", "polling"):
        mod = importlib.import_module(f"workflows_async.{module}")
        for name in mod.__all__:
            assert hasattr(mod, name), f"{module}.{name}"


def test_every_error_is_a_workflows_error() -> None:
    from workflows_async import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.WorkflowsError)
    assert issubclass(errors.WorkflowTimeout, TimeoutError)
    assert issubclass(errors.RequestTimeout, TimeoutError)
    assert issubclass(errors.ConfigurationError, ValueError)
