"""What the warehouse holds, for `journeys status` and `journeys ingest --wait`
(docs/operations.md): per table the rows and the last part written (from system.parts,
so no table is scanned), the newest raw row, late events and dead letters per stage;
and for one run of `journeys ingest`, how many of the raw records it produced (given as
raw-topic offset ranges) the validate stage left out as late or dead-lettered.

system.parts sees this node only; on a cluster its figures are one shard's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import ALL_TABLES, DEAD_LETTERS, LATE_EVENTS, TOUCHPOINTS

MAX_RANGES = 1024  # raw partitions of one run


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets [start, end) of one partition of a topic."""

    partition: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TableStatus:
    table: str
    rows: int  # in active parts: rows of replaced versions not merged away yet count too
    last_part_at: datetime | None  # the newest active part: an insert, or a merge


@dataclass(frozen=True, slots=True)
class StageCount:
    stage: str
    count: int


@dataclass(frozen=True, slots=True)
class WarehouseStatus:
    tables: list[TableStatus]
    newest_raw_at: datetime | None  # max(touchpoints.ingested_at)
    late: list[StageCount]
    dead_letters: list[StageCount]


def _parts_sql(database: str) -> tuple[str, dict[str, Any]]:
    return ("SELECT table, sum(rows), max(modification_time) FROM system.parts "
            "WHERE database = %(db)s AND active GROUP BY table ORDER BY table",
            {"db": database})


def _by_stage_sql(database: str, table: str, final: bool) -> str:
    return (f"SELECT stage, count() FROM {qualified(database, table)}"
            f"{' FINAL' if final else ''} GROUP BY stage ORDER BY stage")


def _when(value: Any) -> datetime | None:
    """A DateTime column's value in UTC; the epoch (an empty table's max) is None."""
    if not isinstance(value, datetime):
        return None
    value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value if value.timestamp() > 0 else None


def warehouse_status(wh: Warehouse) -> WarehouseStatus:
    """Every figure above, from four small queries."""
    db = wh.database
    found = {str(t).removesuffix("_local"): TableStatus(str(t).removesuffix("_local"),
                                                         int(n), _when(at))
             for t, n, at in wh.query(*_parts_sql(db))}
    tables = [found.get(t.name, TableStatus(t.name, 0, None)) for t in ALL_TABLES]
    newest = wh.query(f"SELECT max(ingested_at) FROM {qualified(db, TOUCHPOINTS.name)}")
    late = wh.query(_by_stage_sql(db, LATE_EVENTS.name, final=True))
    dead = wh.query(_by_stage_sql(db, DEAD_LETTERS.name, final=False))
    return WarehouseStatus(tables, _when(newest[0][0]) if newest else None,
                           [StageCount(str(s), int(n)) for s, n in late],
                           [StageCount(str(s), int(n)) for s, n in dead])


def _ranges_clause(ranges: Sequence[OffsetRange]) -> tuple[str, dict[str, Any]]:
    """`kafka_topic = t AND ((partition = p AND offset in [a, b)) OR ...)`."""
    parts, params = [], {}
    for i, r in enumerate(ranges[:MAX_RANGES]):
        parts.append(f"(kafka_partition = %(p{i})s AND kafka_offset >= %(a{i})s "
                     f"AND kafka_offset < %(b{i})s)")
        params.update({f"p{i}": r.partition, f"a{i}": r.start, f"b{i}": r.end})
    return " OR ".join(parts) or "0", params


def build_run_counts(database: str, topic: str, ranges: Sequence[OffsetRange],
                     since: datetime) -> tuple[str, dict[str, Any]]:
    """Late (validate stage) and dead-lettered records among `ranges` of the raw topic,
    and late events of the customer stage detected since `since` (their coordinates are
    internal topics', so they cannot be told apart by run: any source)."""
    clause, params = _ranges_clause(ranges)
    params.update({"topic": topic, "since": since})
    late, dead = qualified(database, LATE_EVENTS.name), qualified(database, DEAD_LETTERS.name)
    sql = (f"SELECT 'late', count() FROM {late} FINAL WHERE stage = 'validate' AND "
           f"kafka_topic = %(topic)s AND ({clause})\n"
           f"UNION ALL SELECT 'dead', count() FROM {dead} WHERE stage = 'validate' AND "
           f"kafka_topic = %(topic)s AND ({clause})\n"
           f"UNION ALL SELECT 'late_customers', count() FROM {late} FINAL WHERE "
           f"stage = 'customers' AND detected_at >= %(since)s")
    return sql, params


def run_counts(wh: Warehouse, topic: str, ranges: Sequence[OffsetRange],
               since: datetime) -> dict[str, int]:
    """{'late': n, 'dead': n, 'late_customers': n} (build_run_counts)."""
    rows = wh.query(*build_run_counts(wh.database, topic, ranges, since))
    out = {"late": 0, "dead": 0, "late_customers": 0}
    out.update({str(k): int(n) for k, n in rows})
    return out
