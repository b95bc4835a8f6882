"""TTLMap against a naive reference: same entries, same answers, same counted bytes, whatever
the order of puts, adds, gets, pops, ttls, sizes and clock steps (a put skips its purge only
when no entry can have expired: that shortcut must never keep an expired entry)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from workflows_async._ttl import ENTRY_OVERHEAD, TTLMap

TTL = 10.0


@dataclass
class Reference:
    """The invariants, spelled out: purge every expired entry on a put, then evict by age."""

    max_size: int
    max_bytes: int | None
    now: float = 0.0
    seq: int = 0
    entries: dict[str, tuple[float, int, int, int]] = field(default_factory=dict)

    def _cost(self, key: str) -> int:
        return len(key) + self.entries[key][2] + ENTRY_OVERHEAD

    def bytes(self) -> int:
        return sum(self._cost(key) for key in self.entries)

    def _live(self, key: str) -> bool:
        return key in self.entries and self.entries[key][0] > self.now

    def add(self, key: str, value: int, ttl: float | None, size: int) -> bool:
        if self._live(key):
            return False
        self.entries.pop(key, None)
        self.seq += 1
        self.entries[key] = (
            self.now + (TTL if ttl is None else ttl),
            self.seq,
            max(size, 0),
            value,
        )
        for old in [k for k, entry in self.entries.items() if entry[0] <= self.now]:
            del self.entries[old]
        while self.entries and (
            len(self.entries) > self.max_size
            or (self.max_bytes is not None and self.bytes() > self.max_bytes)
        ):
            del self.entries[min(self.entries, key=lambda k: self.entries[k][1])]
        return True

    def put(self, key: str, value: int, ttl: float | None, size: int) -> None:
        self.entries.pop(key, None)
        self.add(key, value, ttl, size)

    def get(self, key: str) -> int | None:
        if key not in self.entries:
            return None
        if not self._live(key):
            del self.entries[key]
            return None
        return self.entries[key][3]

    def pop(self, key: str) -> int | None:
        live = self._live(key)
        entry = self.entries.pop(key, None)
        return entry[3] if entry is not None and live else None


keys = st.sampled_from([f"k{i}" for i in range(12)])
ttls = st.sampled_from([None, TTL, 1.0, 4.0, 25.0])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), keys, ttls, st.integers(-5, 60)),
        st.tuples(st.just("put"), keys, ttls, st.integers(-5, 60)),
        st.tuples(st.just("get"), keys),
        st.tuples(st.just("pop"), keys),
        st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 3.0, 9.999, 10.0, 30.0])),
    ),
    max_size=120,
)


@settings(max_examples=400, deadline=None)
@given(
    operations,
    st.integers(1, 8),
    st.one_of(st.none(), st.integers(ENTRY_OVERHEAD, 6 * ENTRY_OVERHEAD)),
)
def test_ttl_map_behaves_as_the_naive_reference(
    ops: list[tuple[object, ...]], max_size: int, max_bytes: int | None
) -> None:
    reference = Reference(max_size, max_bytes)
    ttl_map: TTLMap[int] = TTLMap(TTL, max_size, lambda: reference.now, max_bytes=max_bytes)
    for number, op in enumerate(ops):
        if op[0] == "tick":
            assert isinstance(op[1], float)
            reference.now += op[1]
            continue
        key = op[1]
        assert isinstance(key, str)
        if op[0] == "add":
            ttl, size = op[2], op[3]
            assert isinstance(size, int) and (ttl is None or isinstance(ttl, float))
            assert ttl_map.add(key, number, ttl, size=size) == reference.add(key, number, ttl, size)
        elif op[0] == "put":
            ttl, size = op[2], op[3]
            assert isinstance(size, int) and (ttl is None or isinstance(ttl, float))
            ttl_map.put(key, number, ttl, size=size)
            reference.put(key, number, ttl, size)
        elif op[0] == "get":
            assert ttl_map.get(key) == reference.get(key)
        else:
            assert ttl_map.pop(key) == reference.pop(key)
        # Same entries (expired ones included until a put purges them), same counted bytes.
        assert len(ttl_map) == len(reference.entries)
        assert ttl_map.bytes == reference.bytes()
        assert len(ttl_map) <= max_size
        assert max_bytes is None or ttl_map.bytes <= max_bytes
