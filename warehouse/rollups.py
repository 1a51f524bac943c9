"""Rollups: per-part counts of settled `journey_instances` months (migration 0006).

A settled month is one merged part holding every instance once (warehouse.queries.
_settled). Its funnel/abandonment counts per (journey, day, entry channel, furthest
step, status, dropped_at) are a pure function of that part, so `journeys compact`
counts them once into `journey_rollups`, tagged with the part's name, and reports read
those few thousand rows instead of the month's instances — only while the part is still
the month's one part (checked with system.parts before and after the report, like any
settled read). A new insert or merge makes a new part name: the old rollup is ignored
(and deleted by the next compaction), the month is read from the instances again until
it is compacted and rolled up anew. Exact under replays and retractions because the part
already holds only each instance's latest version (tombstones skipped: deleted = 0).

Each part's rollup is written as its count rows, then a marker row (journey = '');
reports trust a rollup only when its marker exists, so a half-written one is never read.
Rows are ReplacingMergeTree keyed by everything but the count and read with FINAL, so a
rollup written twice (two compactions at once) still counts once.
"""

from __future__ import annotations

from datetime import date

from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_INSTANCES, JOURNEY_ROLLUPS

MARKER = ""
"""`journey` of a part's marker row (journey names are never empty)."""

KEYS = ("journey", "day", "entry_channel", "furthest_step", "status", "dropped_at",
        "definition_version")


def _parts(wh: Warehouse) -> list[tuple[int, str]]:
    """(month, part name) of every settled month: one active part, merged."""
    rows = wh.query(
        "SELECT partition, count(), min(level), any(name) FROM system.parts\n"
        "WHERE database = %(db)s AND table = %(t)s AND active\nGROUP BY partition",
        {"db": wh.database, "t": JOURNEY_INSTANCES.name},
    )
    out = []
    for partition, parts, level, name in rows:
        text = str(partition).strip("'")
        if text.isdigit() and int(parts) == 1 and int(level) > 0:
            out.append((int(text), str(name)))
    return sorted(out)


def rolled_parts(wh: Warehouse) -> set[str]:
    """Names of the parts whose rollup is complete (has its marker row)."""
    rows = wh.query(
        f"SELECT DISTINCT source_part FROM {qualified(wh.database, JOURNEY_ROLLUPS.name)}\n"
        "WHERE journey = %(marker)s", {"marker": MARKER})
    return {str(r[0]) for r in rows}


def roll_up(wh: Warehouse) -> list[int]:
    """Write the rollup of every settled month that lacks one, then delete the rollups
    of parts that are no longer a settled month; returns the months rolled up."""
    db = wh.database
    rollups = qualified(db, JOURNEY_ROLLUPS.name)
    settled = _parts(wh)
    done = rolled_parts(wh)
    keys = ", ".join(KEYS)
    exprs = keys.replace("day", "toDate(opened_at) AS day")
    made = []
    for month, part in settled:
        if part in done:
            continue
        wh.execute(
            f"INSERT INTO {rollups} (source_part, {keys}, instances)\n"
            f"SELECT %(part)s, {exprs}, count()\n"
            f"FROM {qualified(db, JOURNEY_INSTANCES.name)}\n"
            "WHERE toYYYYMM(opened_at) = %(month)s AND _part = %(part)s AND deleted = 0\n"
            f"GROUP BY {keys}",
            {"part": part, "month": month},
        )
        first = date(month // 100, month % 100, 1)
        wh.insert(JOURNEY_ROLLUPS.name, JOURNEY_ROLLUPS.columns,
                  [(part, MARKER, first, "", 0, "", "", 0, "")])
        made.append(month)
    stale = sorted(done - {p for _, p in settled})  # merged away, or no longer settled
    if stale:
        wh.execute(f"ALTER TABLE {rollups} DELETE WHERE source_part IN %(stale)s",
                   {"stale": stale})
    return made
