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
from typing import Generic, TypeVar

__all__ = ["ENTRY_OVERHEAD", "TTLMap"]

V = TypeVar("V")

ENTRY_OVERHEAD = 200
"""Bytes counted for every entry on top of its key and its size: the dict slot, the tuple, the
key object and the expiry float (an estimate of CPython's cost, on the safe side)."""


# One tuple per entry, held by the mapping and by the expiry heap alike (the heap orders by
# expiry, then by the unique sequence number, so the rest is never compared): expiry, sequence,
# key, size (the entry's cost is ``len(key) + size + ENTRY_OVERHEAD``, computed when needed, so
# no int object is kept for it), value. A heap item whose tuple is no longer the mapping's is
# stale (replaced, popped or evicted).
_Item = tuple[float, int, str, int, V]


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
        self._data: OrderedDict[str, _Item[V]] = OrderedDict()  # oldest put first
        self._expiry: list[_Item[V]] = []  # heap of the same tuples; may hold stale items
        self._seq = itertools.count()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """The counted size of the live (and not yet purged) entries."""
        return self._bytes

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            self._remove(key)
            return None
        return item[4]

    def put(self, key: str, value: V, ttl: float | None = None, *, size: int = 0) -> None:
        """Store ``value`` for ``ttl`` seconds (default: the map's); ``size`` is what the value
        costs in memory beyond the fixed overhead (e.g. the length of a raw body)."""
        self._remove(key)
        expires = self._clock() + (self.ttl if ttl is None else ttl)
        item = (expires, next(self._seq), key, max(size, 0), value)
        self._data[key] = item
        self._bytes += _cost(item)
        heapq.heappush(self._expiry, item)
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
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= _cost(item)

    def _over(self) -> bool:
        return len(self._data) > self.max_size or (
            self.max_bytes is not None and self._bytes > self.max_bytes
        )

    def _evict(self) -> None:
        now = self._clock()
        # Expired entries first, wherever they sit: the heap finds them in expiry order.
        while self._expiry and self._expiry[0][0] <= now:
            item = heapq.heappop(self._expiry)
            if self._data.get(item[2]) is item:
                self._remove(item[2])
        # Then the oldest live entries, while over a bound.
        while self._data and self._over():
            _, item = self._data.popitem(last=False)
            self._bytes -= _cost(item)
        # Heap items of replaced, popped or evicted entries: rebuild before they pile up.
        if len(self._expiry) > 2 * len(self._data) + 64:
            self._expiry = list(self._data.values())
            heapq.heapify(self._expiry)

    def __len__(self) -> int:
        return len(self._data)


def _cost(item: _Item[object]) -> int:
    return len(item[2]) + item[3] + ENTRY_OVERHEAD
