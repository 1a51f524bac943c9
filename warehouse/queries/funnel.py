"""Funnel: per step, the instances whose furthest step is at or beyond it.

One pass over `journey_instances` FINAL: each instance is expanded to the steps
0..furthest_step it reached (arrayJoin), so a skipped step counts as reached, exactly
as DESIGN.md's funnel. Conversion = converted / opened (opened = instances at step 0).
Steps nobody reached are filled with zeros here, not left out.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple

import pandas as pd

from journeys.definitions import JourneyDefinition
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _settled

ALLOWED = dict(j.BASE_DIMENSIONS)


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
    sql = (
        f"SELECT {j.select_dims(dims)}"
        "arrayJoin(range(toUInt64(furthest_step) + 1)) AS step_index,\n"
        "    count() AS instances,\n"
        "    countIf(status = 'converted') AS converted,\n"
        "    countIf(status = 'abandoned' AND furthest_step = step_index) AS dropped_here\n"
        f"{_settled.source(database, where, j.columns(dims), split)}\n"
        f"{j.group_by(dims, 'step_index')}\n"
        f"{j.order_by(dims, 'step_index')}"
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
    groups: dict[tuple[Any, ...], dict[int, tuple[int, int, int]]] = {}
    for r in _settled.consistent(wh, date_from, date_to, query):
        key = tuple(j.dim_value(n, v) for n, v in zip(dims, r[: len(dims)], strict=True))
        idx, n, conv, dropped = (int(x) for x in r[len(dims):])
        if idx < len(journey.steps):  # ignore steps of an older, longer definition
            groups.setdefault(key, {})[idx] = (n, conv, dropped)
    rows: list[FunnelRow] = []
    opened = converted = abandoned = 0
    ordered = sorted(groups.items(), key=lambda kv: tuple(
        j.sort_key(journey, n, v) for n, v in zip(dims, kv[0], strict=True)))
    for key, steps in ordered:
        values = dict(zip(dims, key, strict=True))
        first = steps.get(0, (0, 0, 0))
        opened += first[0]
        converted += first[1]
        for idx, name in enumerate(journey.steps):
            n, conv, dropped = steps.get(idx, (0, 0, 0))
            abandoned += dropped
            rows.append(FunnelRow(
                values.get("channel"), values.get("day"), values.get("hour"),
                j.split_context(values), name, idx, n, conv, dropped, j.ratio(n, first[0]),
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
