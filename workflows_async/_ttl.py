"""A small bounded mapping whose entries expire. Pure: the clock is injected (and never goes back).

Invariants: never more than ``max_size`` entries nor more than ``max_bytes`` counted bytes (each
entry counts its key, the ``size`` it was put with and a fixed overhead); an expired entry is
never returned and never holds a slot, wherever it sits (entries may have different ttls); when
room is needed after the expired entries are gone, the oldest entry is evicted first.

How, cheaply: entries put with the map's own ttl expire in the order they were put, so a FIFO
queue finds the expired ones at its front (no heap, no comparison); only entries given another
ttl go into a heap ordered by expiry. The mapping keeps insertion order, so the oldest entry is
its first. The map keeps a lower bound of every entry's expiry: until the clock reaches it, a
put looks for no expired entry (nothing can have expired). A queue or heap item whose tuple is
no longer the mapping's (replaced, popped or evicted) is stale and skipped; both are rebuilt
before stale items pile up.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ENTRY_OVERHEAD", "TTLMap"]

V = TypeVar("V")

ENTRY_OVERHEAD = 200
"""Bytes counted for every entry on top of its key and its size: the dict slot, the tuple, the
key object and the expiry float (an estimate of CPython's cost, on the safe side)."""


# One tuple per entry, held by the mapping and by the queue (or the heap) alike: expiry, key,
# size (the entry's cost is ``len(key) + size + ENTRY_OVERHEAD``, computed when needed, so no
# int object is kept for it), value.
_Item = tuple[float, str, int, V]
_NEVER = float("inf")


class TTLMap(Generic[V]):
    """A bounded mapping whose entries expire; oldest entries are evicted first."""

    __slots__ = (
        "_byte_limit",
        "_bytes",
        "_clock",
        "_data",
        "_heap",
        "_next_expiry",
        "_queue",
        "_seq",
        "_stale",
        "max_bytes",
        "max_size",
        "ttl",
    )

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
        self._queue: deque[_Item[V]] = deque()  # entries of the map's ttl, oldest first
        self._heap: list[tuple[float, int, _Item[V]]] = []  # entries given another ttl
        self._seq = itertools.count()  # heap ties: never compare the items themselves
        self._stale = 0  # queue and heap items whose entry is gone (replaced, popped, evicted)
        self._bytes = 0
        self._byte_limit = _NEVER if max_bytes is None else max_bytes
        # No entry expires before this (a lower bound): until then a put purges nothing.
        self._next_expiry = _NEVER

    @property
    def bytes(self) -> int:
        """The counted size of the live (and not yet purged) entries."""
        return self._bytes

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._data[key]
            self._bytes -= len(key) + item[2] + ENTRY_OVERHEAD
            self._stale += 1
            return None
        return item[3]

    def put(self, key: str, value: V, ttl: float | None = None, *, size: int = 0) -> None:
        """Store ``value`` for ``ttl`` seconds (default: the map's); ``size`` is what the value
        costs in memory beyond the fixed overhead (e.g. the length of a raw body)."""
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= len(key) + old[2] + ENTRY_OVERHEAD
            self._stale += 1
        self.add(key, value, ttl, size=size)  # absent now: put

    def add(self, key: str, value: V, ttl: float | None = None, *, size: int = 0) -> bool:
        """Put only when absent (or expired); True when put."""
        data = self._data
        now = self._clock()
        item = data.get(key)
        if item is not None:
            if item[0] > now:
                return False
            del data[key]  # expired: replaced
            self._bytes -= len(key) + item[2] + ENTRY_OVERHEAD
            self._stale += 1
        if size < 0:
            size = 0
        if ttl is None or ttl == self.ttl:
            item = (now + self.ttl, key, size, value)
            self._queue.append(item)
        else:
            item = (now + ttl, key, size, value)
            heapq.heappush(self._heap, (item[0], next(self._seq), item))
        if item[0] < self._next_expiry:
            self._next_expiry = item[0]
        data[key] = item
        self._bytes += len(key) + size + ENTRY_OVERHEAD
        # Expired entries first, wherever they sit; only when one may have expired.
        if now >= self._next_expiry:
            self._purge(now)
        # Then the oldest live entries, while over a bound.
        if len(data) > self.max_size or self._bytes > self._byte_limit:
            self._evict_oldest()
        if self._stale > 64 and self._stale > len(data) + 64:  # queue + heap > 2 x live + 64
            self._rebuild()
        return True

    def pop(self, key: str) -> V | None:
        item = self._data.pop(key, None)
        if item is None:
            return None
        self._bytes -= len(key) + item[2] + ENTRY_OVERHEAD
        self._stale += 1
        return None if item[0] <= self._clock() else item[3]

    def _purge(self, now: float) -> None:
        """Drop every expired entry: the queue's front, the heap's top; then note the earliest
        expiry left (stale items included: a bound that is early is only a wasted look)."""
        queue, heap = self._queue, self._heap
        while queue and queue[0][0] <= now:
            self._discard(queue.popleft())
        while heap and heap[0][0] <= now:
            self._discard(heapq.heappop(heap)[2])
        self._next_expiry = min(queue[0][0] if queue else _NEVER, heap[0][0] if heap else _NEVER)

    def _evict_oldest(self) -> None:
        data, max_size, byte_limit = self._data, self.max_size, self._byte_limit
        while data and (len(data) > max_size or self._bytes > byte_limit):
            key, item = data.popitem(last=False)
            self._bytes -= len(key) + item[2] + ENTRY_OVERHEAD
            self._stale += 1

    def _discard(self, item: _Item[V]) -> None:
        """Drop the entry of a queue or heap item that has expired, unless it is stale."""
        key = item[1]
        if self._data.get(key) is item:
            del self._data[key]
            self._bytes -= len(key) + item[2] + ENTRY_OVERHEAD
        else:
            self._stale -= 1

    def _rebuild(self) -> None:
        """Queue and heap of the live entries only (stale items of replaced, popped or evicted
        entries go). The mapping's order is the order of putting, hence the queue's."""
        data = self._data
        heap = [entry for entry in self._heap if data.get(entry[2][1]) is entry[2]]
        heapq.heapify(heap)
        own = {id(entry[2]) for entry in heap}
        self._heap = heap
        self._queue = deque(item for item in data.values() if id(item) not in own)
        self._stale = 0

    def __len__(self) -> int:
        return len(self._data)
