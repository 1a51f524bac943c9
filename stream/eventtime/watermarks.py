"""Watermarks: the one home of the stream's event time (docs/semantics.md "Event time").

The rule, as Flink and Dataflow have it:

- Each **source partition** (a partition of the raw topic) has its own watermark: the
  largest occurred_at read from it minus the allowed lateness (`SourceClock`). An event
  older than its own source partition's watermark is *late*; that is the only way an
  event becomes late. A source partition that has caught up with its log and had no
  record for `idle_after` is **idle**: its watermark then moves with the wall clock
  (largest occurred_at + wall time since the last record - lateness), and never stays
  below the watermark of the same reader's busy partitions, so an idle partition stops
  holding the others back. Idleness is decided only here, at the source.
- Watermarks **travel with the data**: every stage writes, after the data of a batch
  and in the same messages, a *claim* per input partition it read: "everything I will
  still send you from input partition i is at or after `mark`" (plus whether i is idle).
  A consumer keeps the latest claim of every upstream partition (`Frontier`) and its
  event time is the **minimum over all of them** (idle ones left out unless all are
  idle); an upstream partition it has no claim from yet holds it at NO_WATERMARK. Its
  own claims downstream are that minimum, so the rule composes stage by stage:
  raw partitions -> by-identity partitions -> by-customer partitions -> alert partitions.

Why this makes event time independent of partitions, workers and backlogs: a claim is
written after the data it covers, on the same partition, so when a consumer has
reached a watermark W every upstream partition has promised nothing older than W,
and no event can arrive behind it unless its own source already called it late. A
backlog, a slow worker or a partition read far ahead only *delays* the minimum; it
never makes an event late. (The one exception, as in Flink: a source partition that
was idle and resumes with events older than what the others have reached; those are
late where they arrive, and counted there.)

Claims are monotonic per upstream partition (a re-delivered old claim changes nothing)
and not persisted by consumers: after a restart a consumer starts at NO_WATERMARK and
rebuilds its frontier from the claims that keep coming (every stage re-sends them at
least every `CLAIM_REFRESH_MS`), which can only delay finality, never hasten it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

NO_WATERMARK = -(2**62)
"""Event time before any event: nothing is late, nothing is final."""
END_OF_TIME = 2**62
"""Event time after every event: "never" (no deadline, no timer)."""

CLAIM_REFRESH_MS = 2_000
"""Every stage re-sends its claims at least this often (wall time) while it runs, so a
consumer that restarted learns every upstream partition's progress again."""


class Claim(NamedTuple):
    """An upstream partition's promise: nothing older than `mark` will follow from it."""

    partition: int
    mark: int
    idle: bool = False


def encode_claims(upstream_partitions: int, claims: Iterable[Claim]) -> list[Any]:
    """Wire form inside an envelope: [partitions of the upstream topic, [[p, mark, idle]...]]."""
    return [upstream_partitions, [[c.partition, c.mark, 1 if c.idle else 0] for c in claims]]


def decode_claims(obj: Any) -> tuple[int, list[Claim]]:
    """(upstream partition count, claims) from `encode_claims`; ValueError if malformed."""
    try:
        count, items = obj
        return int(count), [Claim(int(p), int(m), bool(i)) for p, m, i in items]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"malformed watermark claims: {obj!r}") from exc


class SourceClock:
    """Watermark of one source partition, read in log order by one reader.

    `mark` only grows. `observe` judges an event against the mark *before* it, so an
    event is late only when something at least `lateness` newer was read before it.
    """

    __slots__ = ("last_input_wall", "lateness_ms", "mark", "max_seen")

    def __init__(self, lateness_ms: int, *, max_seen: int = NO_WATERMARK,
                 mark: int = NO_WATERMARK, wall_ms: int = 0) -> None:
        self.lateness_ms = lateness_ms
        self.max_seen = max_seen
        self.mark = max(mark, self._from_max(max_seen))
        self.last_input_wall = wall_ms  # reading started: quiet since then

    def _from_max(self, max_seen: int) -> int:
        return NO_WATERMARK if max_seen <= NO_WATERMARK else max_seen - self.lateness_ms

    def is_late(self, occurred_at: int) -> bool:
        return occurred_at < self.mark

    def observe(self, occurred_at: int, wall_ms: int) -> bool:
        """One record of the partition in log order; True when it is late."""
        self.last_input_wall = wall_ms
        if occurred_at < self.mark:
            return True
        if occurred_at > self.max_seen:
            self.max_seen = occurred_at
            self.mark = max(self.mark, occurred_at - self.lateness_ms)
        return False

    def touch(self, wall_ms: int) -> None:
        """A record was read that carries no event time (rejected): not idle."""
        self.last_input_wall = wall_ms

    def idle_since(self, wall_ms: int, caught_up: bool, idle_after_ms: int) -> int | None:
        """Wall ms without input if the partition counts as idle now, else None."""
        if not caught_up:
            return None
        quiet = wall_ms - self.last_input_wall
        return quiet if quiet >= idle_after_ms else None

    def advance_idle(self, quiet_ms: int, peers_mark: int) -> None:
        """Idle: follow the wall clock, and never stay below the busy partitions of the
        same reader (an idle partition's watermark follows the others')."""
        wall = NO_WATERMARK if self.max_seen <= NO_WATERMARK else (
            self.max_seen + quiet_ms - self.lateness_ms)
        self.mark = max(self.mark, wall, peers_mark)

    def state(self) -> list[int]:
        """What a new reader of the partition needs to judge lateness the same way."""
        return [self.max_seen, self.mark]

    @classmethod
    def restore(cls, lateness_ms: int, state: Sequence[int] | None,
                wall_ms: int = 0) -> SourceClock:
        if not state:
            return cls(lateness_ms, wall_ms=wall_ms)
        return cls(lateness_ms, max_seen=int(state[0]), mark=int(state[1]), wall_ms=wall_ms)


def source_claims(clocks: dict[int, SourceClock], wall_ms: int, caught_up: set[int],
                  idle_after_ms: int) -> list[Claim]:
    """Claims of one reader's source partitions after a batch: idle ones advanced."""
    quiet = {p: q for p, c in clocks.items()
             if (q := c.idle_since(wall_ms, p in caught_up, idle_after_ms)) is not None}
    busy = [c.mark for p, c in clocks.items() if p not in quiet]
    peers = min(busy) if busy else NO_WATERMARK
    for p, q in quiet.items():
        clocks[p].advance_idle(q, peers)
    return [Claim(p, c.mark, p in quiet) for p, c in sorted(clocks.items())]


class Frontier:
    """Event time of one consumer partition: the minimum over its upstream partitions'
    latest claims (idle ones left out while any is busy). Never goes back."""

    __slots__ = ("_idle", "_marks", "expected", "watermark")

    def __init__(self, expected: int = 0) -> None:
        self.expected = expected
        self._marks: dict[int, int] = {}
        self._idle: dict[int, bool] = {}
        self.watermark = NO_WATERMARK

    def update(self, upstream_partitions: int, claims: Iterable[Claim]) -> bool:
        """Apply claims; True when the watermark moved."""
        self.expected = max(self.expected, upstream_partitions)
        marks, idle = self._marks, self._idle
        for c in claims:
            if c.mark >= marks.get(c.partition, NO_WATERMARK):
                marks[c.partition] = c.mark
                idle[c.partition] = c.idle
        before = self.watermark
        self.watermark = max(before, self._combine())
        return self.watermark > before

    def _combine(self) -> int:
        marks = self._marks
        if len(marks) < self.expected or not marks:
            return NO_WATERMARK
        busy = [m for p, m in marks.items() if not self._idle[p]]
        return min(busy) if busy else min(marks.values())

    @property
    def idle(self) -> bool:
        """Every upstream partition is known and idle (the claim to pass on)."""
        return (len(self._marks) >= self.expected > 0
                and all(self._idle.values()))

    def claim(self, partition: int) -> Claim:
        """This consumer partition's own claim downstream."""
        return Claim(partition, self.watermark, self.idle)

    def missing(self) -> list[int]:
        """Upstream partitions no claim has come from yet (what holds it back)."""
        return [p for p in range(self.expected) if p not in self._marks]

    def slowest(self) -> tuple[int, int] | None:
        """(upstream partition, mark) holding the watermark where it is, if any."""
        busy = [(m, p) for p, m in self._marks.items() if not self._idle[p]]
        if not busy:
            return None
        m, p = min(busy)
        return p, m
