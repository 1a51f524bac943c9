"""Funnel/abandonment SQL that reads rolled-up months from `journey_rollups`.

When some months of the cohort have a rollup (warehouse.rollups) and every breakdown
dimension exists in it (`DIMENSIONS`), the report is a UNION ALL of per-branch partial
counts — the rolled months from the rollup, the other months from journey_instances
(plainly or with FINAL, as _settled decides) — summed by the outer query. Every count is
additive across months (an instance lives in one partition), so the numbers are those of
the plain report. Output columns are the same as the plain report's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from warehouse.queries import _journeys as j
from warehouse.queries import _settled
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_ROLLUPS

DIMENSIONS = {"channel": "entry_channel", "day": "day", "step": "dropped_at"}
"""Breakdown name -> rollup column (`hour` and `context.<key>` are not rolled up)."""


def usable(dims: Sequence[j.Dim], split: _settled.Split) -> bool:
    return bool(split.rolled) and all(d.name in DIMENSIONS for d in dims)


def params(split: _settled.Split) -> dict[str, Any]:
    """The month and part lists `sql` refers to."""
    rest = split.without_rolled()
    out: dict[str, Any] = {"rolled_parts": split.rolled_parts}
    if rest.settled:
        out["settled"] = rest.settled
    if rest.dirty:
        out["dirty"] = rest.dirty
    return out


def _rollup_where(channel: str | None) -> str:
    clauses = ["journey = %(journey)s", "definition_version = %(definition_version)s",
               "day >= %(date_from)s", "day <= %(date_to)s", "source_part IN %(rolled_parts)s"]
    if channel is not None:
        clauses.append("entry_channel = %(channel)s")
    return "WHERE " + " AND ".join(clauses)


def sql(database: str, dims: Sequence[j.Dim], keys: Sequence[str], where: str,
        channel: str | None, split: _settled.Split,
        measures: Sequence[tuple[str, str, str]]) -> str:
    """The report over rollups + instances. `keys`: grouping columns present in both
    tables under the same name; `measures`: (alias, instances SQL, rollup SQL), each
    summed by the outer query; `where`: the instances' cohort filter (_journeys.where)."""
    aliases = [d.alias for d in dims] + list(keys)
    group = ", ".join(aliases)
    rest = split.without_rolled()
    branches = []
    if rest.settled or rest.dirty:
        if not rest.settled:  # FINAL, but only over the months without a rollup
            where, rest = f"{where} AND toYYYYMM(opened_at) IN %(dirty)s", rest._replace(dirty=())
        inner = ", ".join(f"{ji} AS m_{a}" for a, ji, _ in measures)
        branches.append(
            f"SELECT {j.select_dims(dims)}{', '.join(keys)}, {inner}\n"
            f"{_settled.source(database, where, j.columns(dims), rest)}\n"
            f"GROUP BY {group}")
    rolled = ", ".join(f"{r} AS m_{a}" for a, _, r in measures)
    dims_sql = "".join(f"{DIMENSIONS[d.name]} AS {d.alias}, " for d in dims)
    branches.append(
        f"SELECT {dims_sql}{', '.join(keys)}, {rolled}\n"
        f"FROM {qualified(database, JOURNEY_ROLLUPS.name)} FINAL\n"
        f"{_rollup_where(channel)}\nGROUP BY {group}")
    outer = ", ".join(f"sum(m_{a}) AS {a}" for a, _, _ in measures)
    union = "\nUNION ALL\n".join(branches)
    return (f"SELECT {group}, {outer}\nFROM (\n{union}\n)\n"
            f"GROUP BY {group}\nORDER BY {group}")
