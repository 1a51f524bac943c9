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

Entries are whole customers (`Entry`: the stage's working record); the bound is a
number of customers (`JOURNEYS_STATE_CACHE_CUSTOMERS`), the least recently used go
first. A decoded customer takes several times the bytes of its stored value.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

from journeys.settings import DEFAULT_STATE_CACHE_CUSTOMERS as DEFAULT_CUSTOMERS

Entry = TypeVar("Entry")


class StateCache(Generic[Entry]):
    """key -> a decoded value, at most `capacity` of them (0: no cache at all)."""

    __slots__ = ("_entries", "capacity", "evictions", "hits", "misses")

    def __init__(self, capacity: int = DEFAULT_CUSTOMERS) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, Entry] = OrderedDict()
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
        entry = self._entries.pop(key, None)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def keep(self, items: Iterable[tuple[str, Entry | None]]) -> None:
        """After a batch prepared completely: its values (None: the key was deleted),
        most recently used last; then the least recently used beyond the capacity go."""
        entries = self._entries
        for key, entry in items:
            if entry is None:
                entries.pop(key, None)
            else:
                entries[key] = entry
                entries.move_to_end(key)
        over = len(entries) - self.capacity
        for _ in range(max(over, 0)):
            entries.popitem(last=False)
        self.evictions += max(over, 0)

    def discard(self, keys: Iterable[str]) -> None:
        for key in list(keys):
            self._entries.pop(key, None)

    def items(self) -> list[tuple[str, Entry]]:
        return list(self._entries.items())

    def clear(self) -> None:
        """Forget everything (a recovery: the table may hold other values now)."""
        self._entries.clear()
