"""Trend: conversion and abandonment per UTC day or ISO week (Monday to Sunday) of the
day instances opened, optionally per entry channel or context field.

The counts are the abandonment report's instances per (day, group, status) (its SQL,
rollups of settled months included), summed into weeks here: every count is additive
across days. Every period from the one holding `from` to the one holding `to` is listed
for every group found, zeros included, so a series has no holes; a week cut by the range
is `partial` (fewer than 7 of its days in the cohort). Recent periods still hold `open`
instances, so their rates are read against everything opened, open ones included.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, NamedTuple

import pandas as pd

from journeys.definitions import JourneyDefinition
from journeys.errors import InvalidQuery
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _settled, abandonment

ALLOWED = {k: v for k, v in j.BASE_DIMENSIONS.items() if k not in ("day", "hour")}
INTERVALS = ("day", "week")


class TrendRow(NamedTuple):
    period: date  # the day, or the Monday of the week
    first_day: date  # the period's first and last days inside from..to
    last_day: date
    partial: bool  # a week with fewer than 7 days inside from..to
    channel: str | None
    context: dict[str, str | None] | None
    opened: int
    converted: int
    abandoned: int
    open: int
    conversion_rate: float | None
    abandonment_rate: float | None


def _names(breakdown: list[str] | None) -> list[str]:
    return [d.name for d in j.dimensions(breakdown, ALLOWED)]


def build(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None, interval: str = "day",
    split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """Instances per (day, group, status): abandonment.build by day and the breakdown."""
    if interval not in INTERVALS:
        raise InvalidQuery(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    return abandonment.build(database, journey, date_from=date_from, date_to=date_to,
                             channel=channel, breakdown=["day", *_names(breakdown)],
                             split=split)


def periods(date_from: date, date_to: date, interval: str) -> list[tuple[date, date, date]]:
    """(period, first day, last day) of every period meeting from..to, in order."""
    out = []
    start = date_from if interval == "day" else date_from - timedelta(days=date_from.weekday())
    step = timedelta(days=1 if interval == "day" else 7)
    while start <= date_to:
        end = start + step - timedelta(days=1)
        out.append((start, max(start, date_from), min(end, date_to)))
        start += step
    return out


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None, interval: str = "day",
) -> list[TrendRow]:
    """Rows per group (breakdown order), then period."""
    def query(split: _settled.Split) -> list[Any]:
        return wh.query(*build(wh.database, journey, date_from=date_from, date_to=date_to,
                               channel=channel, breakdown=breakdown, interval=interval,
                               split=split))

    names = _names(breakdown)
    counts: dict[tuple[Any, ...], dict[date, dict[str, int]]] = {}
    for r in _settled.consistent(wh, date_from, date_to, query):
        day = j.as_date(r[0], "day")
        period = day if interval == "day" else day - timedelta(days=day.weekday())
        group = tuple(j.dim_value(n, v) for n, v in zip(names, r[1: 1 + len(names)], strict=True))
        by_status = counts.setdefault(group, {}).setdefault(period, {})
        status = str(r[1 + len(names)])
        by_status[status] = by_status.get(status, 0) + int(r[2 + len(names)])
    if not names:
        counts.setdefault((), {})  # no breakdown: the series, zeros included, even empty
    rows = []
    for group in sorted(counts, key=lambda g: tuple(
            j.sort_key(journey, n, v) for n, v in zip(names, g, strict=True))):
        values = dict(zip(names, group, strict=True))
        for period, first, last in periods(date_from, date_to, interval):
            c = counts[group].get(period, {})
            opened = sum(c.values())
            conv, ab = c.get("converted", 0), c.get("abandoned", 0)
            rows.append(TrendRow(period, first, last, (last - first).days < 6 and interval
                                 == "week", values.get("channel"), j.split_context(values),
                                 opened, conv, ab, opened - conv - ab, j.ratio(conv, opened),
                                 j.ratio(ab, opened)))
    return rows


def to_frame(rows: list[TrendRow], breakdown: list[str] | None) -> pd.DataFrame:
    names = breakdown or []
    head = ["period", "first_day", "last_day", "partial"]
    measures = list(TrendRow._fields[6:])
    data = [{**{h: getattr(r, h) for h in head}, **j.dim_columns(r, names),
             **{m: getattr(r, m) for m in measures}} for r in rows]
    return pd.DataFrame(data, columns=[*head, *names, *measures])
