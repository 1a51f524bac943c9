"""Read `journey_instances` with FINAL only where duplicate versions can exist.

FINAL (collapse versions at read time) is what keeps replays from double counting, but
on ClickHouse 18.16 it merges in one thread: ~1 s per 2.5M rows here, 10x a plain scan.
A monthly partition that is a single *merged* part (level > 0) holds each instance once
— a ReplacingMergeTree merge keeps only the latest version of every key — so it can be
read without FINAL and give the same numbers. `journeys compact` (warehouse.compaction)
makes partitions so; background merges often do too. Reports read settled months
plainly and the rest with FINAL (one UNION ALL when both exist), with the cohort filter
inside each branch (18.16 does not push predicates into subqueries).

Races: the cohort's parts are read from system.parts before the report's queries and
again after; if any part of those months changed meanwhile (an insert or a merge), the
report runs again with FINAL everywhere. Parts are immutable and a merge makes a new
name, so an unchanged name set means the queries read exactly those parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, NamedTuple, TypeVar

from warehouse._errors import StatementError
from warehouse.backend import Warehouse
from warehouse.rollups import MARKER
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_INSTANCES, JOURNEY_ROLLUPS

T = TypeVar("T")
UNKNOWN_TABLE = 60  # ClickHouse error code
Signature = tuple[tuple[int, tuple[str, ...], bool], ...]


def _month(d: date) -> int:
    return d.year * 100 + d.month


class Split(NamedTuple):
    """Months of a cohort's range: `settled` (one merged part: read plainly) and `dirty`
    (several or unmerged parts: read with FINAL); months with no parts are in neither.
    `rolled`: the settled months whose part has a rollup (warehouse.rollups), and
    `rolled_parts` those parts' names — reports that can read rollups do so there."""

    settled: tuple[int, ...] = ()
    dirty: tuple[int, ...] = ()
    rolled: tuple[int, ...] = ()
    rolled_parts: tuple[str, ...] = ()

    def without_rolled(self) -> Split:
        """The months to read from journey_instances when rollups serve `rolled`."""
        return Split(tuple(m for m in self.settled if m not in self.rolled), self.dirty)


FINAL_EVERYWHERE = Split()


def split_months(wh: Warehouse, date_from: date, date_to: date) -> tuple[Split, Signature]:
    """The cohort's months split by how they can be read, and the names of all their
    parts as a signature to re-check after the report's queries."""
    rollups = qualified(wh.database, JOURNEY_ROLLUPS.name)
    has_rollup = f"max(name IN (SELECT source_part FROM {rollups} WHERE journey = %(marker)s))"
    sql = ("SELECT partition, count(), min(level), groupArray(name), {rolled}\n"
           "FROM system.parts\n"
           "WHERE database = %(db)s AND table = %(t)s AND active\nGROUP BY partition")
    params = {"db": wh.database, "t": JOURNEY_INSTANCES.name, "marker": MARKER}
    try:
        rows = wh.query(sql.format(rolled=has_rollup), params)
    except StatementError as exc:  # not migrated to 0006 yet: no rollups to read
        if exc.code != UNKNOWN_TABLE:
            raise
        rows = wh.query(sql.format(rolled="0"), params)
    lo, hi = _month(date_from), _month(date_to)
    settled: list[int] = []
    dirty: list[int] = []
    rolled: list[int] = []
    rolled_parts: list[str] = []
    signature: list[tuple[int, tuple[str, ...], bool]] = []
    for partition, parts, level, names, has_rollup in rows:
        text = str(partition).strip("'")
        if not text.isdigit() or not lo <= int(text) <= hi:
            continue
        month = int(text)
        single = int(parts) == 1 and int(level) > 0
        (settled if single else dirty).append(month)
        if single and int(has_rollup):
            rolled.append(month)
            rolled_parts.append(str(names[0]))
        signature.append((month, tuple(sorted(str(n) for n in names)), bool(int(has_rollup))))
    split = Split(tuple(sorted(settled)), tuple(sorted(dirty)), tuple(sorted(rolled)),
                  tuple(sorted(rolled_parts)))
    return split, tuple(sorted(signature))


def source(database: str, where: str, columns: Sequence[str], split: Split,
           array_join: str = "") -> str:
    """`FROM ... [ARRAY JOIN ...] WHERE ...` over live instances at their latest version.

    No settled month: the plain FINAL form. All months settled: a plain read of them.
    Both: a UNION ALL of the settled months read plainly and the dirty ones with FINAL,
    each with the cohort filter; `columns` are the ones the outer query uses (fixed
    lists in the report modules)."""
    table = qualified(database, JOURNEY_INSTANCES.name)
    aj = f"{array_join}\n" if array_join else ""
    if not split.settled:
        return f"FROM {table} FINAL\n{aj}{where}"
    if not split.dirty:
        return f"FROM {table}\n{aj}{where} AND toYYYYMM(opened_at) IN %(settled)s"
    cols = ", ".join(dict.fromkeys(columns))
    return (
        f"FROM (\n    SELECT {cols} FROM {table}\n    {where}"
        " AND toYYYYMM(opened_at) IN %(settled)s\n"
        f"    UNION ALL\n    SELECT {cols} FROM {table} FINAL\n    {where}"
        " AND toYYYYMM(opened_at) IN %(dirty)s\n)\n"
        f"{aj}".rstrip("\n")
    )


def params(split: Split) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if split.settled:
        out["settled"] = split.settled
        if split.dirty:
            out["dirty"] = split.dirty
    return out


def consistent(wh: Warehouse, date_from: date, date_to: date,
               run: Callable[[Split], T]) -> T:
    """`run(split)`; again with FINAL everywhere if the cohort's parts changed meanwhile
    (an insert or merge: the plain-read months may no longer be what was read)."""
    split, before = split_months(wh, date_from, date_to)
    result = run(split)
    if split.settled and split_months(wh, date_from, date_to)[1] != before:
        return run(FINAL_EVERYWHERE)
    return result
