"""`journeys ingest --wait`: return once what a run produced is queryable.

Every stage commits a batch only after its outputs are durable (the warehouse rows
included), so a run is processed once, stage by stage in processing order
(journeys.stages), each consumer group has committed the end offsets its topic had
when the stage before it was done; the raw stage's target is the raw topic's ends seen
right after producing. Then the warehouse is asked how many of the run's raw records
were late or dead-lettered (by their raw offsets; warehouse.queries.status).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from deploy.discovery import Target
from deploy.ops import offsets
from deploy.ops.progress import caught_up, ranges
from deploy.ops.sources import WarehouseSource
from journeys.errors import JourneysError
from journeys.stages import Stage, stages
from warehouse.queries.status import OffsetRange

Progress = Callable[[Stage, int, int], None]  # stage, committed past the start, to do


class WaitTimeout(JourneysError):
    """The pipeline did not catch up in time (the message names the stage)."""


@dataclass
class RunResult:
    """What a waited run produced and what became of it."""

    ranges: list[OffsetRange]
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # late, dead, late_customers
    newest_raw_at: datetime | None = None

    @property
    def records(self) -> int:
        return sum(r.end - r.start for r in self.ranges)


def raw_ends(target: Target) -> dict[int, int]:
    """The raw topic's end offset per partition, now."""
    kafka = target.kafka
    parts = offsets.partitions(kafka.bootstrap_servers, [kafka.raw_topic])
    ends = offsets.end_offsets(kafka.bootstrap_servers, parts)
    return {p: e for (_t, p), e in ends.items()}


def _wait_stage(target: Target, stage: Stage, goal: dict[int, int], deadline: float,
                progress: Progress, start: dict[int, int] | None = None) -> None:
    """Until `stage` has committed `goal`; progress counts from `start` (default: what
    it had committed at the first look)."""
    servers = target.kafka.bootstrap_servers
    first = None if start is None else sum(min(start.get(p, 0), e) for p, e in goal.items())
    while True:
        got = offsets.committed(servers, stage.group, [(stage.topic, p) for p in goal])
        done = {p: c.offset for (_t, p), c in got.items()}
        now = sum(min(done.get(p) or 0, e) for p, e in goal.items())
        first = now if first is None else first
        progress(stage, now - first, sum(goal.values()) - first)
        if caught_up(goal, done):
            return
        if time.monotonic() > deadline:
            behind = sum(goal.values()) - now
            raise WaitTimeout(f"timed out: the {stage.name} stage ({stage.group} on "
                              f"{stage.topic}) is still {behind:,} records behind; is a "
                              "worker running? (`journeys status` shows every stage)")
        time.sleep(0.3)


def wait_processed(target: Target, before: dict[int, int], after: dict[int, int], *,
                   timeout_s: float, progress: Progress) -> None:
    """Until every stage has processed what the raw topic held at `after` (see the
    module docstring); WaitTimeout after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    kafka = target.kafka
    servers = kafka.bootstrap_servers
    for stage in stages(kafka, target.app_id):
        for _round in range(stage.rounds):
            if stage.topic == kafka.raw_topic:
                _wait_stage(target, stage, after, deadline, progress, before)
                continue
            parts = offsets.partitions(servers, [stage.topic])
            goal = {p: e for (_t, p), e in offsets.end_offsets(servers, parts).items()}
            _wait_stage(target, stage, goal, deadline, progress)


def run_report(target: Target, source: WarehouseSource, before: dict[int, int],
               after: dict[int, int], started: datetime) -> RunResult:
    """Late and dead-lettered records of the run, and the warehouse's newest raw row."""
    result = RunResult([OffsetRange(p, a, b) for p, a, b in ranges(before, after)])
    result.counts = source.run_counts(target.kafka.raw_topic, result.ranges, started)
    result.newest_raw_at = source.status().newest_raw_at
    return result


def now_utc() -> datetime:
    return datetime.now(UTC)
