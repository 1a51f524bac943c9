"""Abandonment: abandoned instances by the step they dropped at, optionally over time.

An abandoned instance is dropped at its furthest step reached (DESIGN.md). Rows are
grouped by the breakdown (default: step); `day`/`hour` bucket the instance's opened_at,
the same cohort the `from`/`to` filter selects. Totals count every status, so the
abandonment rate (abandoned / opened) is read against the same cohort.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple

import pandas as pd

from journeys.definitions import JourneyDefinition
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _rollup, _settled

ALLOWED = {"step": "dropped_at", **j.BASE_DIMENSIONS}
DEFAULT = ("step",)


class AbandonmentRow(NamedTuple):
    step: str | None
    channel: str | None
    day: date | None
    hour: datetime | None
    context: dict[str, str | None] | None  # context.<key> breakdowns: key -> value
    abandoned: int
    share_of_abandoned: float | None


class AbandonmentTotals(NamedTuple):
    opened: int
    abandoned: int
    converted: int
    open: int
    abandonment_rate: float | None


def build(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
    split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """Instances per breakdown group and status, in one scan: the abandoned ones are the
    rows, all of them the cohort totals (`split`: see _settled)."""
    dims = j.dimensions(breakdown, ALLOWED, DEFAULT)
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel)
    if _rollup.usable(dims, split):
        measures = (("instances", "count()", "sum(instances)"),)
        sql = _rollup.sql(database, dims, ("status",), where, channel, split, measures)
        return sql, {**params, **j.dim_params(dims), **_rollup.params(split)}
    sql = (
        f"SELECT {j.select_dims(dims)}status, count() AS instances\n"
        f"{_settled.source(database, where, j.columns(dims), split)}\n"
        f"{j.group_by(dims, 'status')}\n"
        f"{j.order_by(dims, 'status')}"
    )
    return sql, {**params, **j.dim_params(dims), **_settled.params(split)}


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
) -> tuple[list[AbandonmentRow], AbandonmentTotals]:
    """Rows ordered by the breakdown (steps in definition order); and cohort totals."""
    def query(split: _settled.Split) -> list[Any]:
        return wh.query(*build(wh.database, journey, date_from=date_from, date_to=date_to,
                               channel=channel, breakdown=breakdown, split=split))

    dims = [d.name for d in j.dimensions(breakdown, ALLOWED, DEFAULT)]
    found = []
    by_status: dict[str, int] = {}
    for r in _settled.consistent(wh, date_from, date_to, query):
        status, n = str(r[len(dims)]), int(r[len(dims) + 1])
        by_status[status] = by_status.get(status, 0) + n
        if status == "abandoned":
            found.append(({k: j.dim_value(k, v) for k, v in
                           zip(dims, r[: len(dims)], strict=True)}, n))
    opened = sum(by_status.values())
    abandoned, converted = by_status.get("abandoned", 0), by_status.get("converted", 0)

    def order(item: tuple[dict[str, Any], int]) -> tuple[Any, ...]:
        v = item[0]
        return tuple(j.sort_key(journey, n, v[n]) for n in dims)

    rows = [
        AbandonmentRow(v.get("step"), v.get("channel"), v.get("day"), v.get("hour"),
                       j.split_context(v), n, j.ratio(n, abandoned))
        for v, n in sorted(found, key=order)
    ]
    totals = AbandonmentTotals(opened, abandoned, converted, opened - abandoned - converted,
                               j.ratio(abandoned, opened))
    return rows, totals


def to_frame(rows: list[AbandonmentRow], breakdown: list[str] | None) -> pd.DataFrame:
    names = list(DEFAULT if breakdown is None else breakdown)
    data = [{**j.dim_columns(r, names), "abandoned": r.abandoned,
             "share_of_abandoned": r.share_of_abandoned} for r in rows]
    return pd.DataFrame(data, columns=[*names, "abandoned", "share_of_abandoned"])
