"""Compaction: merge each unsettled `journey_instances` partition into one part.

A partition that is one merged part holds every instance once, so reports read it
without FINAL (warehouse.queries._settled), ~10x faster on ClickHouse 18.16. Background
merges get there on their own only eventually; `journeys compact` (from cron, e.g.
hourly) does it now with `OPTIMIZE ... PARTITION p FINAL`, which rewrites one month:
seconds for millions of rows. New inserts make a month unsettled again until the next
run; reports stay exact meanwhile (they use FINAL there). Settled months then get a
rollup (warehouse.rollups) that funnel and abandonment read instead of the instances.
"""

from __future__ import annotations

from typing import NamedTuple

from warehouse import rollups
from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_INSTANCES


class Unsettled(NamedTuple):
    partition: int  # YYYYMM
    parts: int
    rows: int


def unsettled(wh: Warehouse) -> list[Unsettled]:
    """Partitions that are not a single merged part (so reports read them with FINAL)."""
    rows = wh.query(
        "SELECT partition, count(), min(level), sum(rows) FROM system.parts\n"
        "WHERE database = %(db)s AND table = %(t)s AND active\n"
        "GROUP BY partition ORDER BY partition",
        {"db": wh.database, "t": JOURNEY_INSTANCES.name},
    )
    out = []
    for partition, parts, level, n in rows:
        text = str(partition).strip("'")
        if text.isdigit() and (int(parts) > 1 or int(level) == 0):
            out.append(Unsettled(int(text), int(parts), int(n)))
    return out


def compact(wh: Warehouse, partitions: list[Unsettled] | None = None) -> list[Unsettled]:
    """OPTIMIZE ... FINAL each unsettled partition (or the given ones), then roll up
    every settled month that has no rollup yet (warehouse.rollups); returns the
    partitions optimized."""
    todo = unsettled(wh) if partitions is None else partitions
    table = qualified(wh.database, JOURNEY_INSTANCES.name)
    for p in todo:
        wh.execute(f"OPTIMIZE TABLE {table} PARTITION %(p)s FINAL", {"p": int(p.partition)})
    rollups.roll_up(wh)
    return todo
