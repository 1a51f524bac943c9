"""Retention: drop whole monthly partitions that are entirely older than a cutoff.

Every time-series table is partitioned by `toYYYYMM(<its time column>)`, so dropping a
partition is a cheap metadata operation (no mutation, no rewrite) and removes whole
months at once. A partition is dropped only when the month *ends* on or before the
cutoff (today − N days, UTC), so nothing newer than the cutoff is ever lost; data is
kept up to a month longer than asked. ClickHouse 18.16 has no TTL, hence a command
(`journeys retention --older-than N`) to run from cron. Tables and partition values
come from fixed lists and system.parts; the partition goes to SQL as a parameter.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from journeys.errors import InvalidQuery
from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import (
    DEAD_LETTERS,
    JOURNEY_INSTANCES,
    JOURNEY_ROLLUPS,
    SESSIONS,
    TOUCHPOINTS,
)
from warehouse.writers_alerts import ALERTS

TABLES: tuple[str, ...] = (
    TOUCHPOINTS.name, SESSIONS.name, DEAD_LETTERS.name, ALERTS.name, JOURNEY_INSTANCES.name,
    JOURNEY_ROLLUPS.name,  # by the month of `day` (= the instances' opened_at month)
)
"""Tables partitioned by toYYYYMM of their time column (schema_migrations is not)."""

_MONTH = re.compile(r"^(\d{4})(\d{2})$")


class PartitionDrop(NamedTuple):
    table: str
    partition: int  # YYYYMM
    rows: int
    bytes_on_disk: int


def cutoff_date(older_than_days: int, today: date | None = None) -> date:
    if older_than_days < 1:
        raise InvalidQuery("--older-than must be at least 1 day")
    return (today or datetime.now(UTC).date()) - timedelta(days=older_than_days)


def _month_end(partition: int) -> date:
    """First day after the partition's month."""
    year, month = divmod(partition, 100)
    return date(year + month // 12, month % 12 + 1, 1)


def plan(wh: Warehouse, older_than_days: int, *, today: date | None = None,
         tables: tuple[str, ...] = TABLES) -> list[PartitionDrop]:
    """The partitions that `apply` would drop, oldest first per table."""
    cutoff = cutoff_date(older_than_days, today)
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise InvalidQuery(f"no retention for tables {unknown}; known: {', '.join(TABLES)}")
    rows = wh.query(
        "SELECT table, partition, sum(rows), sum(bytes_on_disk) FROM system.parts\n"
        "WHERE database = %(db)s AND active AND table IN %(tables)s\n"
        "GROUP BY table, partition ORDER BY table, partition",
        {"db": wh.database, "tables": tuple(tables)},
    )
    drops = []
    for table, partition, n, size in rows:
        match = _MONTH.match(str(partition).strip("'"))
        if match is None or table not in TABLES:  # not a toYYYYMM partition: never touch
            continue
        month = int(match.group(0))
        if _month_end(month) <= cutoff:
            drops.append(PartitionDrop(str(table), month, int(n), int(size)))
    return drops


def apply(wh: Warehouse, drops: list[PartitionDrop]) -> int:
    """Drop the planned partitions; returns rows removed. Dropping a partition that is
    already gone is a no-op on both engines, so a re-run after a failure is safe."""
    removed = 0
    for d in drops:
        if d.table not in TABLES:
            raise InvalidQuery(f"no retention for table {d.table!r}")
        wh.execute(f"ALTER TABLE {qualified(wh.database, d.table)} DROP PARTITION %(p)s",
                   {"p": int(d.partition)})
        removed += d.rows
    return removed
