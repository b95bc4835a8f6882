"""A small bounded mapping whose entries expire. Pure: the clock is injected.

Invariants: never more than ``max_size`` entries nor more than ``max_bytes`` counted bytes (each
entry counts its key, the ``size`` it was put with and a fixed overhead); an expired entry is
never returned and never holds a slot, wherever it sits (entries may have different ttls); when
room is needed after the expired entries are gone, the oldest entry is evicted first.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

__all__ = ["ENTRY_OVERHEAD", "TTLMap"]

V = TypeVar("V")

ENTRY_OVERHEAD = 200
"""Bytes counted for every entry on top of its key and its size: the dict slot, the tuple, the
key object and the expiry float (an estimate of CPython's cost, on the safe side)."""


class _Entry(NamedTuple, Generic[V]):
    expires: float
    seq: int
    cost: int
    value: V


class TTLMap(Generic[V]):
    """A bounded mapping whose entries expire; oldest entries are evicted first."""

    def __init__(
        self,
        ttl: float,
        max_size: int,
        clock: Callable[[], float],
        *,
        max_bytes: int | None = None,
    ) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, _Entry[V]] = OrderedDict()  # oldest put first
        self._expiry: list[tuple[float, int, str]] = []  # heap; may hold stale items
        self._seq = itertools.count()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """The counted size of the live (and not yet purged) entries."""
        return self._bytes

    def get(self, key: str) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._remove(key)
            return None
        return entry.value

    def put(self, key: str, value: V, ttl: float | None = None, *, size: int = 0) -> None:
        """Store ``value`` for ``ttl`` seconds (default: the map's); ``size`` is what the value
        costs in memory beyond the fixed overhead (e.g. the length of a raw body)."""
        self._remove(key)
        expires = self._clock() + (self.ttl if ttl is None else ttl)
        seq = next(self._seq)
        cost = len(key) + max(size, 0) + ENTRY_OVERHEAD
        self._data[key] = _Entry(expires, seq, cost, value)
        self._bytes += cost
        heapq.heappush(self._expiry, (expires, seq, key))
        self._evict()

    def add(self, key: str, value: V, ttl: float | None = None, *, size: int = 0) -> bool:
        """Put only when absent (or expired); True when put."""
        if self.get(key) is not None:
            return False
        self.put(key, value, ttl, size=size)
        return True

    def pop(self, key: str) -> V | None:
        value = self.get(key)
        self._remove(key)
        return value

    def _remove(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= entry.cost

    def _over(self) -> bool:
        return len(self._data) > self.max_size or (
            self.max_bytes is not None and self._bytes > self.max_bytes
        )

    def _evict(self) -> None:
        now = self._clock()
        # Expired entries first, wherever they sit: the heap finds them in expiry order.
        while self._expiry and self._expiry[0][0] <= now:
            _, seq, key = heapq.heappop(self._expiry)
            entry = self._data.get(key)
            if entry is not None and entry.seq == seq:
                self._remove(key)
        # Then the oldest live entries, while over a bound.
        while self._data and self._over():
            key, entry = self._data.popitem(last=False)
            self._bytes -= entry.cost
        # Heap items of replaced, popped or evicted entries: rebuild before they pile up.
        if len(self._expiry) > 2 * len(self._data) + 64:
            self._expiry = [(e.expires, e.seq, k) for k, e in self._data.items()]
            heapq.heapify(self._expiry)

    def __len__(self) -> int:
        return len(self._data)
