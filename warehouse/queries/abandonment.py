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
from warehouse.queries import _settled

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
    """Abandoned instances per breakdown group (`split`: see _settled)."""
    dims = j.dimensions(breakdown, ALLOWED, DEFAULT)
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel,
                            extra=("status = 'abandoned'",))
    sql = (
        f"SELECT {j.select_dims(dims)}count() AS abandoned\n"
        f"{_settled.source(database, where, j.columns(dims), split)}\n"
        f"{j.group_by(dims)}\n"
        f"{j.order_by(dims)}"
    ).rstrip()
    return sql, {**params, **j.dim_params(dims), **_settled.params(split)}


def build_totals(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel)
    sql = (
        "SELECT count(), countIf(status = 'abandoned'), countIf(status = 'converted')\n"
        f"{_settled.source(database, where, j.COHORT_COLUMNS, split)}"
    )
    return sql, {**params, **_settled.params(split)}


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
) -> tuple[list[AbandonmentRow], AbandonmentTotals]:
    """Rows ordered by the breakdown (steps in definition order); and cohort totals."""
    kw: dict[str, Any] = {"date_from": date_from, "date_to": date_to, "channel": channel}

    def query(split: _settled.Split) -> tuple[list[Any], list[Any]]:
        return (wh.query(*build(wh.database, journey, breakdown=breakdown, split=split,
                                **kw)),
                wh.query(*build_totals(wh.database, journey, split=split, **kw)))

    grouped, totals_row = _settled.consistent(wh, date_from, date_to, query)
    dims = [d.name for d in j.dimensions(breakdown, ALLOWED, DEFAULT)]
    found = []
    for r in grouped:
        values = {n: j.dim_value(n, v) for n, v in zip(dims, r[: len(dims)], strict=True)}
        found.append((values, int(r[len(dims)])))
    opened, abandoned, converted = (int(x) for x in totals_row[0])

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
