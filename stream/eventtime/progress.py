"""Event-time progress of one by-customer partition: watermark, idle advance, timers.

Faust has no watermarks and no event-time timers, so each partition keeps:

- an `EventClock` (watermark = max occurred_at seen - allowed lateness), advanced by
  events in the partition's log order;
- an **idle advance**: when the partition has had no input for `idle_after`, event time
  is assumed to flow with the wall clock, so the watermark moves by the wall time
  elapsed since the last input and abandonment is still emitted in real time;
- a **wake index**: customer key -> the watermark at which its state needs a visit
  (a journey deadline, an unsettled event, session cleanup), as a lazy min-heap, so a
  watermark advance visits only customers that are due;
- a **hold index**: customers waiting for a stitched device's handover (stream.stages.envelopes
  "hold") -> (link time, wall ms since). They are not due by watermark (the handover
  visits them); the drop-off alert stage gets `alert_watermark`, which stays below
  their link times, so their observations are not late when the handover settles them;
  a hold overdue by wall time is visited and given up (`overdue`).

All in memory. The clock is rebuilt from re-delivered events after a restart (that is
what keeps recovery exact, see stream.engine.sessions), and a snapshot of it is written to the
state table with every batch (`snapshot`) so that, once the partition has caught up,
the idle advance can resume from where the previous owner left it (`seed`). The wake
index is rebuilt from the table after recovery (stream.stages.customers.rebuild).
"""

from __future__ import annotations

import heapq

import orjson

from stream.engine.sessions import NO_WATERMARK, EventClock


class PartitionProgress:
    __slots__ = ("_heap", "base_max_ms", "clock", "holds", "last_input_wall_ms", "seed",
                 "wakes")

    def __init__(self, allowed_lateness_ms: int) -> None:
        self.clock = EventClock(allowed_lateness_ms)
        self.last_input_wall_ms: int | None = None
        self.base_max_ms = NO_WATERMARK
        self.seed: tuple[int, int] | None = None  # (max_event_ms, wall ms) of a snapshot
        self.wakes: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self.holds: dict[str, tuple[int, int]] = {}

    @property
    def watermark(self) -> int:
        return self.clock.watermark

    @property
    def alert_watermark(self) -> int:
        """The watermark as far as settled observations go: below every held link."""
        wm = self.clock.watermark
        if self.holds:
            wm = min(wm, min(at for at, _since in self.holds.values()))
        return wm

    def set_hold(self, key: str, hold: tuple[int, int] | None) -> None:
        if hold is None:
            self.holds.pop(key, None)
        else:
            self.holds[key] = hold

    def overdue(self, wall_ms: int, max_wait_ms: int) -> list[str]:
        """Held customers whose handover is overdue by wall time (to visit and release)."""
        return [k for k, (_at, since) in self.holds.items() if wall_ms - since > max_wait_ms]

    def observe(self, occurred_at: int, wall_ms: int) -> bool:
        """One event in log order; True when it is late (behind the watermark)."""
        late = self.clock.observe(occurred_at)
        self.last_input_wall_ms = wall_ms
        self.base_max_ms = self.clock.max_event_ms
        return late

    def idle_advance(self, wall_ms: int, idle_after_ms: int) -> bool:
        """Move event time with the wall clock if there was no input for idle_after_ms.

        Call only when the partition has caught up with its log (nothing re-delivered is
        still pending): a seed from a snapshot is used then too. True if it moved.
        """
        before = self.clock.max_event_ms
        candidates = []
        if self.last_input_wall_ms is not None:
            idle = wall_ms - self.last_input_wall_ms
            if idle < idle_after_ms:
                return False
            candidates.append(self.base_max_ms + idle)
        if self.seed is not None:
            seed_max, seed_wall = self.seed
            candidates.append(seed_max + max(0, wall_ms - seed_wall))
        if candidates:
            self.clock.advance_to(max(candidates))
        return self.clock.max_event_ms > before

    def snapshot(self, wall_ms: int) -> bytes | None:
        """[max_event_ms, wall_ms] for the state table; None before any progress."""
        if self.clock.max_event_ms == NO_WATERMARK:
            return None
        return orjson.dumps([self.clock.max_event_ms, wall_ms])

    def load_seed(self, data: bytes | None) -> None:
        if data:
            max_ms, wall = orjson.loads(data)
            if self.seed is None or max_ms > self.seed[0]:
                self.seed = (int(max_ms), int(wall))

    # ------------------------------------------------------------------ timers
    def schedule(self, key: str, wake: int | None) -> None:
        """Set (or clear, with None) when `key` is next due."""
        if wake is None:
            self.wakes.pop(key, None)
            return
        if self.wakes.get(key) != wake:
            self.wakes[key] = wake
            heapq.heappush(self._heap, (wake, key))

    def due(self, watermark: int) -> list[str]:
        """Keys due at `watermark` (removed from the index; re-schedule after a visit)."""
        out: list[str] = []
        heap, wakes = self._heap, self.wakes
        while heap and heap[0][0] <= watermark:
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
