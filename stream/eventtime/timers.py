"""Event-time timers of one consumer partition: which keys are due at a watermark.

Faust has no event-time timers. A stage that must act when event time passes a
per-key time (a journey deadline, an unsettled event, a session's end) schedules the
key here; whenever the partition's watermark moves, `due(watermark)` yields the keys to
visit, so a watermark advance touches only keys that are due. Never the source of
truth: after recovery the index is rebuilt from the table (the customer stage stores
each key's wake time in the first bytes of its value for that).

`Timers` is the port; `WakeIndex` keeps it in memory (~200 bytes a key), the RocksDB
adapter (stream/agents/wake_store.py, with `JOURNEYS_STATE_STORE=rocksdb`) keeps it on
disk so a worker's memory does not grow with its open journeys (docs/reliability.md).
"""

from __future__ import annotations

import heapq
from typing import Protocol


class Timers(Protocol):
    """key -> the watermark at which it is next due."""

    def schedule(self, key: str, wake: int | None) -> None:
        """Set (or clear, with None) when `key` is next due."""
        ...

    def due(self, watermark: int, limit: int | None = None) -> list[str]:
        """Keys due at `watermark`, earliest first (removed from the index); at most
        `limit` of them, the rest left due for the next call."""
        ...

    def next_wake(self) -> int | None: ...

    def __len__(self) -> int: ...

    def close(self) -> None:
        """Release what the index holds (its partition was revoked)."""
        ...


class WakeIndex:
    """key -> the watermark at which it is due, as a lazy min-heap."""

    __slots__ = ("_heap", "wakes")

    def __init__(self) -> None:
        self.wakes: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def schedule(self, key: str, wake: int | None) -> None:
        """Set (or clear, with None) when `key` is next due."""
        if wake is None:
            self.wakes.pop(key, None)
            return
        if self.wakes.get(key) != wake:
            self.wakes[key] = wake
            heapq.heappush(self._heap, (wake, key))

    def due(self, watermark: int, limit: int | None = None) -> list[str]:
        """Keys due at `watermark` (removed from the index; re-schedule after a visit),
        at most `limit`."""
        out: list[str] = []
        heap, wakes = self._heap, self.wakes
        room = -1 if limit is None else limit
        while heap and heap[0][0] <= watermark and len(out) != room:
            wake, key = heapq.heappop(heap)
            if wakes.get(key) == wake:  # else a stale entry: rescheduled or cleared
                del wakes[key]
                out.append(key)
        return out

    def next_wake(self) -> int | None:
        heap, wakes = self._heap, self.wakes
        while heap and wakes.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def __len__(self) -> int:
        return len(self.wakes)

    def close(self) -> None:
        self.wakes.clear()
        self._heap.clear()
