"""`journeys status`: per stage committed vs end offsets (lag), the raw partitions'
event time, late and dead-lettered counts, the warehouse's last writes. Reads Kafka
and the warehouse (or a stack's API); never touches a worker (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deploy.discovery import Target
from deploy.ops import offsets
from deploy.ops.progress import SourceClock, StageLag, source_clock, stage_lag
from deploy.ops.sources import StackApi, WarehouseSource
from journeys.errors import JourneysError
from journeys.stages import stages
from journeys.timeutil import ms_to_iso, now_ms
from warehouse.queries.status import WarehouseStatus

SETTLE_S = 2.5


@dataclass
class StatusReport:
    checked_at_ms: int
    broker: str
    app_id: str
    stack: str | None
    stages: list[StageLag]
    missing_topics: list[str]
    clocks: list[SourceClock]
    dead_letter_records: int  # on the dead-letter topic (all stages, all time)
    event_time_lag: dict[str, float] | None = None  # stack metrics (None: not asked)
    warehouse: WarehouseStatus | None = None
    warehouse_where: str = ""
    warehouse_error: str | None = None

    @property
    def lag(self) -> int:
        return sum(s.lag for s in self.stages)


def collect(target: Target, source: WarehouseSource | None, *,
            settle_s: float = SETTLE_S) -> StatusReport:
    """Everything `journeys status` shows (Kafka errors raise; a warehouse that does not
    answer is reported, so the Kafka side is still shown). A record is behind when its
    stage has not committed it within `settle_s` of the ends being read: stages commit
    about every second, and idle stages keep sending watermark claims downstream."""
    kafka = target.kafka
    layout = stages(kafka, target.app_id)
    topics = offsets.partitions(kafka.bootstrap_servers, {s.topic for s in layout})
    ends = offsets.end_offsets(kafka.bootstrap_servers, topics)
    lags: list[StageLag] = []
    clocks: list[SourceClock] = []
    deadline = time.monotonic() + settle_s
    for stage in layout:
        if stage.topic not in topics:
            continue
        while True:  # internal topics get watermark claims all the time: allow a commit
            done = offsets.committed(kafka.bootstrap_servers, stage.group,
                                     [k for k in ends if k[0] == stage.topic])
            lag = stage_lag(stage, ends, done)
            if not lag.lag or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        lags.append(lag)
        if stage.name == "validate":
            clocks = [c for (_t, p), got in sorted(done.items())
                      if (c := source_clock(p, got.metadata)) is not None]
    report = StatusReport(
        now_ms(), kafka.bootstrap_servers, target.app_id,
        str(target.stack.stack.data_dir) if target.stack else None, lags,
        sorted({s.topic for s in layout} - set(topics)), clocks,
        sum(n for (t, _p), n in ends.items() if t == kafka.dead_letter_topic))
    if source is not None:
        report.warehouse_where = source.where
        try:
            report.warehouse = source.status()
        except JourneysError as exc:
            report.warehouse_error = str(exc)
        except Exception as exc:  # a driver's own error: report it, keep the Kafka side
            report.warehouse_error = f"{type(exc).__name__}: {exc}"
    if not report.clocks and isinstance(source, StackApi):
        with contextlib.suppress(JourneysError):  # else shown as "not observable"
            report.event_time_lag = source.event_time_lag()
    return report


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def to_json(r: StatusReport) -> dict[str, Any]:
    """The `--json` document (docs/operations.md shows one)."""
    wh = r.warehouse
    return {
        "checked_at": ms_to_iso(r.checked_at_ms), "broker": r.broker, "app_id": r.app_id,
        "stack": r.stack, "lag": r.lag, "caught_up": r.lag == 0,
        "stages": [s.as_json() for s in r.stages], "missing_topics": r.missing_topics,
        "event_time": {
            "source_partitions": [{"partition": c.partition, "newest": ms_to_iso(c.newest_ms),
                                   "watermark": ms_to_iso(c.watermark_ms)} for c in r.clocks],
            "stage_lag_seconds": r.event_time_lag},
        "dead_letter_topic_records": r.dead_letter_records,
        "warehouse": None if wh is None else {
            "where": r.warehouse_where,
            "tables": [{"table": t.table, "rows": t.rows, "last_part_at": _iso(t.last_part_at)}
                       for t in wh.tables],
            "newest_raw_at": _iso(wh.newest_raw_at),
            "late": {c.stage: c.count for c in wh.late},
            "dead_letters": {c.stage: c.count for c in wh.dead_letters}},
        "warehouse_error": r.warehouse_error,
    }
