"""Customers' decoded values kept between batches of the customer stage, LRU-bounded.

Without it every batch decoded each touched customer's whole value from the table's
bytes (orjson, then every open run replayed from its path) and threw the objects away
after encoding them again: the largest per-batch cost of the stage (docs/performance.md
"Customer state kept decoded"). The cache sits in front of the table store: the stage
still writes every changed value to the store and its changelog in every batch, so
recovery reads exactly what it read before; the cache only saves the decode.

The rule that keeps it exact: an entry is the decoded form of what the table holds for
its key, nothing else. So
- it is updated only when a batch was prepared completely (its values go to the store
  in the same batch: a batch whose writes fail crashes the worker, and the cache with
  it); a batch that raised drops every key it loaded (it may have changed them half);
- a deleted value leaves the cache (the next load finds nothing, like the store);
- every recovery (a rebalance, a restart) empties it: the new generation reloads every
  customer from the recovered table (stream.agents.customers `on_recovered`), and a
  partition that moved away and back meanwhile holds what its other owner wrote.

Entries are whole customers (`Entry`: the stage's working record). Two bounds, the
least recently used go first: a number of customers (`JOURNEYS_STATE_CACHE_CUSTOMERS`)
and the summed size of their stored values (`MAX_STORED_BYTES`). A decoded customer
takes ~8x the bytes of its stored value (measured with the demo traffic: 12,766
customers, 3.0 MB stored, 22.5 MB decoded), so the count alone would let a few
thousand customers with long open journeys take gigabytes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from journeys.settings import DEFAULT_STATE_CACHE_CUSTOMERS as DEFAULT_CUSTOMERS

MAX_STORED_BYTES = 16 << 20
"""Stored bytes of the cached customers' values, at most (~130 MB of them decoded)."""

Entry = TypeVar("Entry")


class StateCache(Generic[Entry]):
    """key -> a decoded value, at most `capacity` of them (0: no cache at all) whose
    `weigh`ts (their stored sizes) add up to at most `max_bytes`."""

    __slots__ = ("_entries", "_weigh", "bytes", "capacity", "evictions", "hits",
                 "max_bytes", "misses")

    def __init__(self, capacity: int = DEFAULT_CUSTOMERS, *,
                 weigh: Callable[[Entry], int] = lambda _e: 0,
                 max_bytes: int = MAX_STORED_BYTES) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._entries: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self.bytes = 0  # the entries' weights
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def take(self, key: str) -> Entry | None:
        """The entry of `key`, removed from the cache while a batch works on it (a batch
        that fails then leaves nothing half-changed behind); `keep` puts it back."""
        held = self._entries.pop(key, None)
        if held is None:
            self.misses += 1
            return None
        self.hits += 1
        self.bytes -= held[1]
        return held[0]

    def keep(self, items: Iterable[tuple[str, Entry | None]]) -> None:
        """After a batch prepared completely: its values (None: the key was deleted),
        most recently used last; then the least recently used beyond the capacity go."""
        entries = self._entries
        for key, entry in items:
            old = entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if entry is not None:
                weight = self._weigh(entry)
                if weight > self.max_bytes:
                    continue  # over the whole bound alone: never kept
                entries[key] = (entry, weight)
                self.bytes += weight
        while entries and (len(entries) > self.capacity or self.bytes > self.max_bytes):
            _key, (_entry, weight) = entries.popitem(last=False)
            self.bytes -= weight
            self.evictions += 1

    def discard(self, keys: Iterable[str]) -> None:
        for key in list(keys):
            held = self._entries.pop(key, None)
            if held is not None:
                self.bytes -= held[1]

    def items(self) -> list[tuple[str, Entry]]:
        return [(key, entry) for key, (entry, _w) in self._entries.items()]

    def clear(self) -> None:
        """Forget everything (a recovery: the table may hold other values now)."""
        self._entries.clear()
        self.bytes = 0
