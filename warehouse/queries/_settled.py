"""Read `journey_instances` with FINAL only where duplicate versions can exist.

FINAL (collapse versions at read time) is what keeps replays from double counting, but
on ClickHouse 18.16 it merges in one thread: ~1 s per 2.5M rows here, 10x a plain scan.
A monthly partition that is a single *merged* part (level > 0) holds each instance once
— a ReplacingMergeTree merge keeps only the latest version of every key — so it can be
read without FINAL and give the same numbers. `journeys compact` (warehouse.compaction)
makes partitions so; background merges often do too. Reports read settled months
plainly and the rest with FINAL, in one UNION ALL, with the cohort filter inside each
branch (18.16 does not push predicates into subqueries).

Races: the settled set is read from system.parts before the report's queries and again
after; if any settled month's parts changed meanwhile (an insert landed in it), the
report runs again with FINAL everywhere. Parts are immutable and a merge makes a new
name, so an unchanged name set means the query read exactly those merged parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import TypeVar

from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_INSTANCES

T = TypeVar("T")
Signature = tuple[tuple[int, tuple[str, ...]], ...]


def _month(d: date) -> int:
    return d.year * 100 + d.month


def settled_months(wh: Warehouse, date_from: date, date_to: date) -> tuple[tuple[int, ...],
                                                                         Signature]:
    """Months of [date_from, date_to] whose partition is one merged part (or absent is
    irrelevant: no rows), and their part names as a signature to re-check later."""
    rows = wh.query(
        "SELECT partition, count(), min(level), groupArray(name) FROM system.parts\n"
        "WHERE database = %(db)s AND table = %(t)s AND active\nGROUP BY partition",
        {"db": wh.database, "t": JOURNEY_INSTANCES.name},
    )
    lo, hi = _month(date_from), _month(date_to)
    settled = []
    for partition, parts, level, names in rows:
        text = str(partition).strip("'")
        if not text.isdigit():
            continue
        month = int(text)
        if lo <= month <= hi and int(parts) == 1 and int(level) > 0:
            settled.append((month, tuple(sorted(str(n) for n in names))))
    settled.sort()
    return tuple(m for m, _ in settled), tuple(settled)


def source(database: str, where: str, columns: Sequence[str], settled: Sequence[int],
           array_join: str = "") -> str:
    """`FROM ... [ARRAY JOIN ...] WHERE ...` over live instances at their latest version.

    No settled months: the plain FINAL form. Otherwise a UNION ALL of the settled months
    read without FINAL and the other months with FINAL, each with the cohort filter;
    `columns` are the ones the outer query uses (fixed lists in the report modules)."""
    table = qualified(database, JOURNEY_INSTANCES.name)
    aj = f"{array_join}\n" if array_join else ""
    if not settled:
        return f"FROM {table} FINAL\n{aj}{where}"
    cols = ", ".join(dict.fromkeys(columns))
    return (
        f"FROM (\n    SELECT {cols} FROM {table}\n    {where}"
        " AND toYYYYMM(opened_at) IN %(settled)s\n"
        f"    UNION ALL\n    SELECT {cols} FROM {table} FINAL\n    {where}"
        " AND toYYYYMM(opened_at) NOT IN %(settled)s\n)\n"
        f"{aj}".rstrip("\n")
    )


def consistent(wh: Warehouse, date_from: date, date_to: date,
               run: Callable[[tuple[int, ...]], T]) -> T:
    """`run(settled)`, re-run with FINAL everywhere if a settled month changed meanwhile."""
    settled, before = settled_months(wh, date_from, date_to)
    result = run(settled)
    if settled and settled_months(wh, date_from, date_to)[1] != before:
        return run(())
    return result
