"""Funnel: per step, the instances whose furthest step is at or beyond it.

One pass over `journey_instances` counts instances per (group, furthest step); the
"at or beyond" sums are done here in Python over those few rows (cheaper than expanding
every instance to the steps it reached in SQL: ~2x on 18.16), so a skipped step counts
as reached, exactly as DESIGN.md's funnel. Conversion = converted / opened (opened =
instances at step 0). Steps nobody reached are filled with zeros, not left out.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple

import pandas as pd

from journeys.definitions import JourneyDefinition
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _rollup, _settled

ALLOWED = dict(j.BASE_DIMENSIONS)
MEASURES = (  # (alias, over instances, over rollups: warehouse.queries._rollup)
    ("instances", "count()", "sum(instances)"),
    ("converted", "countIf(status = 'converted')", "sumIf(instances, status = 'converted')"),
    ("abandoned", "countIf(status = 'abandoned')", "sumIf(instances, status = 'abandoned')"),
)


class FunnelRow(NamedTuple):
    channel: str | None
    day: date | None
    hour: datetime | None
    context: dict[str, str | None] | None  # context.<key> breakdowns: key -> value
    step: str
    step_index: int
    instances: int  # furthest step >= this step
    converted: int  # of those, converted
    dropped_here: int  # abandoned with this as furthest step
    share_of_opened: float | None


class FunnelTotals(NamedTuple):
    opened: int
    converted: int
    abandoned: int
    open: int
    conversion_rate: float | None


def build(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
    split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """`split`: which months to read with or without FINAL (warehouse.queries._settled)."""
    dims = j.dimensions(breakdown, ALLOWED)
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel)
    if _rollup.usable(dims, split):
        sql = _rollup.sql(database, dims, ("furthest_step",), where, channel, split, MEASURES)
        return sql, {**params, **j.dim_params(dims), **_rollup.params(split)}
    sql = (
        f"SELECT {j.select_dims(dims)}furthest_step, count() AS instances,\n"
        "    countIf(status = 'converted') AS converted,\n"
        "    countIf(status = 'abandoned') AS abandoned\n"
        f"{_settled.source(database, where, j.columns(dims), split)}\n"
        f"{j.group_by(dims, 'furthest_step')}\n"
        f"{j.order_by(dims, 'furthest_step')}"
    )
    return sql, {**params, **j.dim_params(dims), **_settled.params(split)}


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
) -> tuple[list[FunnelRow], FunnelTotals]:
    """Rows per (group, step), every step present for every group; and overall totals."""
    def query(split: _settled.Split) -> list[tuple[Any, ...]]:
        return wh.query(*build(wh.database, journey, date_from=date_from, date_to=date_to,
                               channel=channel, breakdown=breakdown, split=split))

    dims = [d.name for d in j.dimensions(breakdown, ALLOWED)]
    by_furthest: dict[tuple[Any, ...], dict[int, tuple[int, int, int]]] = {}
    for r in _settled.consistent(wh, date_from, date_to, query):
        key = tuple(j.dim_value(n, v) for n, v in zip(dims, r[: len(dims)], strict=True))
        furthest, n, conv, ab = (int(x) for x in r[len(dims):])
        by_furthest.setdefault(key, {})[furthest] = (n, conv, ab)
    rows: list[FunnelRow] = []
    opened = converted = abandoned = 0
    ordered = sorted(by_furthest.items(), key=lambda kv: tuple(
        j.sort_key(journey, n, v) for n, v in zip(dims, kv[0], strict=True)))
    for key, counts in ordered:
        values = dict(zip(dims, key, strict=True))
        group_opened = sum(n for n, _, _ in counts.values())
        opened += group_opened
        converted += sum(c for _, c, _ in counts.values())
        for idx, name in enumerate(journey.steps):  # steps of an older, longer definition
            reached = [v for f, v in counts.items() if f >= idx]  # count for the last one
            n, conv = sum(v[0] for v in reached), sum(v[1] for v in reached)
            dropped = counts.get(idx, (0, 0, 0))[2]
            abandoned += dropped
            rows.append(FunnelRow(
                values.get("channel"), values.get("day"), values.get("hour"),
                j.split_context(values), name, idx, n, conv, dropped,
                j.ratio(n, group_opened),
            ))
    totals = FunnelTotals(opened, converted, abandoned, opened - converted - abandoned,
                          j.ratio(converted, opened))
    return rows, totals


def to_frame(rows: list[FunnelRow], breakdown: list[str] | None) -> pd.DataFrame:
    """Rows as a DataFrame with only the requested dimension columns (for CSV)."""
    names = breakdown or []
    measures = FunnelRow._fields[4:]
    data = [{**j.dim_columns(r, names), **{m: getattr(r, m) for m in measures}} for r in rows]
    return pd.DataFrame(data, columns=[*names, *measures])
