"""Pure figures of `journeys status` and `journeys ingest --wait`: lag per stage from
committed and end offsets, the raw partitions' event time from the validate stage's
commit metadata, and when a wait is done (journeys.stages: stage by stage, in order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from deploy.ops.offsets import Committed, Ends
from journeys.stages import Stage


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - (self.committed or 0))


@dataclass(frozen=True, slots=True)
class StageLag:
    stage: Stage
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def end(self) -> int:
        return sum(p.end for p in self.partitions)

    @property
    def committed(self) -> int:
        return sum(min(p.committed or 0, p.end) for p in self.partitions)

    @property
    def started(self) -> bool:
        """The group has committed anything here (a worker has run on these topics)."""
        return any(p.committed is not None for p in self.partitions)

    def as_json(self) -> dict[str, object]:
        return {"stage": self.stage.name, "topic": self.stage.topic, "group": self.stage.group,
                "committed": self.committed, "end": self.end, "lag": self.lag,
                "partitions": [{"partition": p.partition, "committed": p.committed,
                                "end": p.end, "lag": p.lag} for p in self.partitions]}


def stage_lag(stage: Stage, ends: Ends, done: Mapping[tuple[str, int], Committed]) -> StageLag:
    """The stage's partitions (those in `ends`), committed against end."""
    parts = sorted(p for t, p in ends if t == stage.topic)
    missing = Committed(None, None)
    return StageLag(stage, tuple(
        PartitionLag(p, done.get((stage.topic, p), missing).offset, ends[(stage.topic, p)])
        for p in parts))


def caught_up(target: Mapping[int, int], done: Mapping[int, int | None]) -> bool:
    """Every partition's committed offset is at or past its target end."""
    return all((done.get(p) or 0) >= end for p, end in target.items())


@dataclass(frozen=True, slots=True)
class SourceClock:
    """A raw partition's event time as its validate reader committed it."""

    partition: int
    newest_ms: int  # the newest event time read there
    watermark_ms: int  # newest minus the allowed lateness (or wall clock when idle)


def source_clock(partition: int, metadata: str | None) -> SourceClock | None:
    """The clock the validate stage commits as metadata (stream.eventtime.watermarks
    SourceClock.state(): [max_seen, mark]); None when the broker dropped the metadata
    (Tansu) or nothing was read yet."""
    if not metadata:
        return None
    try:
        state = orjson.loads(metadata)
    except orjson.JSONDecodeError:
        return None
    if (not isinstance(state, list) or len(state) < 2
            or not all(isinstance(v, int) for v in state[:2]) or state[0] <= 0):
        return None
    return SourceClock(partition, int(state[0]), int(state[1]))


def ranges(start: Mapping[int, int], end: Mapping[int, int]) -> list[tuple[int, int, int]]:
    """(partition, first, end) of what was appended between two snapshots of ends."""
    return [(p, start.get(p, 0), e) for p, e in sorted(end.items()) if e > start.get(p, 0)]
