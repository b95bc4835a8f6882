"""A small bounded mapping whose entries expire. Pure: the clock is injected.

Invariants: never more than ``max_size`` entries; an expired entry is never returned; the
oldest entry is evicted first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TTLMap"]

V = TypeVar("V")


class TTLMap(Generic[V]):
    """A bounded mapping whose entries expire; oldest entries are evicted first."""

    def __init__(self, ttl: float, max_size: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._data[key]
            return None
        return entry[1]

    def put(self, key: str, value: V, ttl: float | None = None) -> None:
        self._data.pop(key, None)
        self._data[key] = (self._clock() + (self.ttl if ttl is None else ttl), value)
        self._evict()

    def add(self, key: str, value: V, ttl: float | None = None) -> bool:
        """Put only when absent (or expired); True when put."""
        if self.get(key) is not None:
            return False
        self.put(key, value, ttl)
        return True

    def pop(self, key: str) -> V | None:
        value = self.get(key)
        self._data.pop(key, None)
        return value

    def _evict(self) -> None:
        now = self._clock()
        while self._data:
            key, (expires, _) = next(iter(self._data.items()))
            if expires > now and len(self._data) <= self.max_size:
                break
            del self._data[key]

    def __len__(self) -> int:
        return len(self._data)
