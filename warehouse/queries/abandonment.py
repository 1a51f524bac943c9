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

ALLOWED = {"step": "dropped_at", **j.BASE_DIMENSIONS}
DEFAULT = ("step",)


class AbandonmentRow(NamedTuple):
    step: str | None
    channel: str | None
    day: date | None
    hour: datetime | None
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
) -> tuple[str, dict[str, Any]]:
    """Abandoned instances per breakdown group."""
    dims = j.dimensions(breakdown, ALLOWED, DEFAULT)
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel,
                            extra=("status = 'abandoned'",))
    order = ", ".join(n for n, _ in dims)
    sql = (
        f"SELECT {j.select_dims(dims)}count() AS abandoned\n"
        f"FROM {j.table(database)}\n"
        f"{where}\n"
        f"{j.group_by(dims)}"
        + (f"\nORDER BY {order}" if order else "")
    )
    return sql, params


def build_totals(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None,
) -> tuple[str, dict[str, Any]]:
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel)
    sql = (
        "SELECT count(), countIf(status = 'abandoned'), countIf(status = 'converted')\n"
        f"FROM {j.table(database)}\n{where}"
    )
    return sql, params


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
) -> tuple[list[AbandonmentRow], AbandonmentTotals]:
    """Rows ordered by the breakdown (steps in definition order); and cohort totals."""
    kw: dict[str, Any] = {"date_from": date_from, "date_to": date_to, "channel": channel}
    sql, params = build(wh.database, journey, breakdown=breakdown, **kw)
    dims = [n for n, _ in j.dimensions(breakdown, ALLOWED, DEFAULT)]
    found = []
    for r in wh.query(sql, params):
        values = {n: j.dim_value(n, v) for n, v in zip(dims, r[: len(dims)], strict=True)}
        found.append((values, int(r[len(dims)])))
    tsql, tparams = build_totals(wh.database, journey, **kw)
    opened, abandoned, converted = (int(x) for x in wh.query(tsql, tparams)[0])

    def order(item: tuple[dict[str, Any], int]) -> tuple[Any, ...]:
        v = item[0]
        return tuple(j.step_order(journey, v[n]) if n == "step" else v[n] for n in dims)

    rows = [
        AbandonmentRow(v.get("step"), v.get("channel"), v.get("day"), v.get("hour"), n,
                       j.ratio(n, abandoned))
        for v, n in sorted(found, key=order)
    ]
    totals = AbandonmentTotals(opened, abandoned, converted, opened - abandoned - converted,
                               j.ratio(abandoned, opened))
    return rows, totals


def to_frame(rows: list[AbandonmentRow], breakdown: list[str] | None) -> pd.DataFrame:
    keep = [*(DEFAULT if breakdown is None else breakdown), "abandoned", "share_of_abandoned"]
    return pd.DataFrame(rows, columns=list(AbandonmentRow._fields))[keep]
