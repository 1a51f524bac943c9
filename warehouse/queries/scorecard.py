"""Journey scorecard: one line per definition with the figures a product manager checks
first, and their change against the previous period.

Per definition, at the version given (the API: each one's current version; the rows of
that version only, docs/semantics.md "Definition versions"), over the cohort opened
from..to (and the entry-channel filter): opened,
converted, abandoned, open and the two rates (the funnel report's totals), the median
time to convert (time_to_convert's end to end), the worst step (the step most abandoned
instances dropped at; ties: the earlier step) with its drop rate (dropped there / reached
it), and drop-off alerts fired (alerts table, FINAL: a replayed alert counts once) whose
window starts inside the range (with a channel filter: that channel's alerts only), of
the same definition version. Each
figure is compared with the period of the same length just before (compare.Change).

Value converted / abandoned: the sum of the journey value (docs/semantics.md "Journey
value": an instance's latest usable `properties.value`, computed by the stream engine and
stored with the instance, migration 0011) over the converted / abandoned instances of the
cohort, with how many of them carry one. Null when none does (the events carry no
value, or the rows predate 0011): no value is not a value of 0.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import pandas as pd

from journeys.definitions import JourneyDefinition
from journeys.errors import InvalidQuery
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _settled, compare, funnel, time_to_convert
from warehouse.queries._stats import previous_period
from warehouse.sql import qualified
from warehouse.writers_alerts import ALERTS

COUNTS = ("opened", "converted", "abandoned", "open", "alerts_fired")


class Scores(NamedTuple):
    journey: str
    version: str  # the definition version the figures are of
    opened: int
    converted: int
    abandoned: int
    open: int
    conversion_rate: float | None
    abandonment_rate: float | None
    median_seconds_to_convert: float | None
    worst_step: str | None
    worst_step_abandoned: int
    worst_step_drop_rate: float | None  # abandoned there / reached it
    alerts_fired: int
    value_converted: float | None  # sum of the converted instances' journey values
    value_abandoned: float | None
    converted_with_value: int  # instances the sums are over
    abandoned_with_value: int


class Values(NamedTuple):
    value_converted: float | None
    value_abandoned: float | None
    converted_with_value: int
    abandoned_with_value: int


NO_VALUES = Values(None, None, 0, 0)


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def build_alerts(database: str, *, date_from: date, date_to: date, channel: str | None = None,
                 versions: j.Versions | None = None) -> tuple[str, dict[str, Any]]:
    """Fired alerts per journey whose window starts on the days from..to (with
    `versions`: of those (journey, definition version) pairs only)."""
    lo, hi = j.as_date(date_from, "from"), j.as_date(date_to, "to")
    params: dict[str, Any] = {"from_ms": _ms(lo), "to_ms": _ms(hi + timedelta(days=1))}
    where = ["kind = 'fired'", "window_start_ms >= %(from_ms)s", "window_start_ms < %(to_ms)s"]
    if versions is not None:
        where.append(j.VERSIONS_IN)
        params["versions"] = j.version_keys(versions)
    if channel is not None:
        where.append("channel = %(channel)s")
        params["channel"] = channel
    sql = (f"SELECT journey, count() FROM {qualified(database, ALERTS.name)} FINAL\n"
           f"WHERE {' AND '.join(where)}\nGROUP BY journey\nORDER BY journey")
    return sql, params


def build_values(database: str, journey: JourneyDefinition, *, date_from: date,
                 date_to: date, channel: str | None = None,
                 split: _settled.Split = _settled.FINAL_EVERYWHERE,
                 ) -> tuple[str, dict[str, Any]]:
    """Per closed status: instances with a journey value, and the sum of their values."""
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel,
                            extra=("status IN ('converted', 'abandoned')",
                                   "has_journey_value = 1"))
    cols = j.columns((), "journey_value", "has_journey_value")
    sql = (f"SELECT status, count(), sum(journey_value)\n"
           f"{_settled.source(database, where, cols, split)}\nGROUP BY status\nORDER BY status")
    return sql, {**params, **_settled.params(split)}


def values(wh: Warehouse, d: JourneyDefinition, *, date_from: date, date_to: date,
           channel: str | None = None) -> Values:
    """Value converted / abandoned of the cohort (module docstring)."""
    def query(split: _settled.Split) -> list[Any]:
        return wh.query(*build_values(wh.database, d, date_from=date_from, date_to=date_to,
                                      channel=channel, split=split))

    got = {str(s): (int(n), float(v)) for s, n, v in
           _settled.consistent(wh, date_from, date_to, query)}
    conv, ab = got.get("converted"), got.get("abandoned")
    return Values(conv[1] if conv else None, ab[1] if ab else None,
                  conv[0] if conv else 0, ab[0] if ab else 0)


def _scores(wh: Warehouse, d: JourneyDefinition, date_from: date, date_to: date,
            channel: str | None, alerts: dict[str, int]) -> Scores:
    kw: dict[str, Any] = {"date_from": date_from, "date_to": date_to, "channel": channel}
    rows, t = funnel.run(wh, d, **kw)
    worst = max(rows[:-1], key=lambda r: (r.dropped_here, -r.step_index), default=None)
    if worst is not None and not worst.dropped_here:
        worst = None
    end = time_to_convert.end_to_end(wh, d, **kw)
    return Scores(d.name, d.version, t.opened, t.converted, t.abandoned, t.open,
                  t.conversion_rate, j.ratio(t.abandoned, t.opened), end.p50_seconds,
                  worst.step if worst else None, worst.dropped_here if worst else 0,
                  j.ratio(worst.dropped_here, worst.instances) if worst else None,
                  alerts.get(d.name, 0), *values(wh, d, **kw))


def versions(journeys: list[JourneyDefinition]) -> list[tuple[str, str]]:
    """The (journey, definition version) pairs the scorecard reads."""
    return [(d.name, d.version) for d in journeys]


def _alerts(wh: Warehouse, journeys: list[JourneyDefinition], lo: date, hi: date,
            channel: str | None) -> dict[str, int]:
    return {str(k): int(n) for k, n in wh.query(*build_alerts(
        wh.database, date_from=lo, date_to=hi, channel=channel, versions=versions(journeys)))}


def run(
    wh: Warehouse, journeys: list[JourneyDefinition], *, date_from: date, date_to: date,
    channel: str | None = None,
) -> tuple[list[tuple[Scores, compare.Compared | None]], tuple[date, date] | None]:
    """Scores per definition (in the order given, each at its `version`) with their
    comparison (the same version in the previous period), and the previous period (None,
    and no comparison, when the range starts on the first possible day)."""
    try:
        before: tuple[date, date] | None = previous_period(date_from, date_to)
    except InvalidQuery:
        before = None
    now_alerts = _alerts(wh, journeys, date_from, date_to, channel)
    then_alerts = _alerts(wh, journeys, *before, channel) if before else {}
    out: list[tuple[Scores, compare.Compared | None]] = []
    for d in journeys:
        now = _scores(wh, d, date_from, date_to, channel, now_alerts)
        if before is None:
            out.append((now, None))
            continue
        then = _scores(wh, d, *before, channel, then_alerts)
        rates = {"conversion_rate": ((now.converted, now.opened), (then.converted, then.opened)),
                 "abandonment_rate": ((now.abandoned, now.opened),
                                      (then.abandoned, then.opened))}
        figures = compare.compared(now, then, (*COUNTS, "median_seconds_to_convert",
                                               "value_converted", "value_abandoned"), rates)
        out.append((now, figures))
    return out, before


def to_frame(rows: list[tuple[Scores, compare.Compared | None]]) -> pd.DataFrame:
    df = pd.DataFrame([s._asdict() for s, _ in rows], columns=list(Scores._fields))
    found = [c for _, c in rows if c is not None]
    if len(found) != len(rows):
        return df
    return compare.with_columns(df, found, ("conversion_rate", "abandonment_rate"))
