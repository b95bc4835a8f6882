"""Lazy public names for a package ``__init__``: each name's module is imported on first use.

Invariant: a name not in the package's source table raises ``AttributeError`` (as a plain
attribute miss would); a name once loaded is kept in the package's namespace, so the lookup
runs once per name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping, MutableMapping

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    sources: Mapping[str, str],
    namespace: MutableMapping[str, object],
    public: Collection[str],
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose public names live in the
    modules ``sources`` gives (relative module names, such as ``".errors"``)."""

    def __getattr__(name: str) -> object:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *public})

    return __getattr__, __dir__
