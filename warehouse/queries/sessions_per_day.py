"""Sessions per day per channel: how many sessions started each day, by the channel of
the session's first event. Days are UTC calendar days of `started_at` (event time).

Reads `sessions` FINAL with deleted = 0, so a session counts once at its latest version
and merged/moved sessions (tombstones) not at all, even before background merges.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple

import pandas as pd

from journeys.errors import InvalidQuery
from warehouse.backend import Warehouse
from warehouse.sql import qualified
from warehouse.tables import SESSIONS

MAX_DAYS = 3660
MIN_DATE, MAX_DATE = date(1970, 1, 1), date(2105, 12, 31)


class SessionsPerDayRow(NamedTuple):
    day: date
    channel: str
    sessions: int


def _as_date(value: date, name: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if not isinstance(value, date):
        raise InvalidQuery(f"{name} must be a date, got {type(value).__name__}")
    if not MIN_DATE <= value <= MAX_DATE:  # outside a ClickHouse Date: the engine would fail
        raise InvalidQuery(f"'{name}' ({value}) must be within {MIN_DATE}..{MAX_DATE}")
    return value


def build(
    database: str, *, date_from: date, date_to: date, channel: str | None = None
) -> tuple[str, dict[str, Any]]:
    """SQL text and parameters; both ends of the day range are inclusive."""
    lo, hi = _as_date(date_from, "from"), _as_date(date_to, "to")
    if lo > hi:
        raise InvalidQuery(f"from ({lo}) is after to ({hi})")
    if (hi - lo).days >= MAX_DAYS:
        raise InvalidQuery(f"the range {lo}..{hi} is longer than {MAX_DAYS} days")
    params: dict[str, Any] = {"date_from": lo, "date_to": hi}
    where = [
        "toDate(started_at) >= %(date_from)s",
        "toDate(started_at) <= %(date_to)s",
        "deleted = 0",
    ]
    if channel is not None:
        where.append("first_channel = %(channel)s")
        params["channel"] = channel
    sql = (
        "SELECT toDate(started_at) AS day, first_channel AS channel, count() AS sessions\n"
        f"FROM {qualified(database, SESSIONS.name)} FINAL\n"
        f"WHERE {' AND '.join(where)}\n"
        "GROUP BY day, channel\n"
        "ORDER BY day, channel"
    )
    return sql, params


def run(
    wh: Warehouse, *, date_from: date, date_to: date, channel: str | None = None
) -> list[SessionsPerDayRow]:
    """Rows ordered by day, then channel; days without sessions are absent."""
    sql, params = build(wh.database, date_from=date_from, date_to=date_to, channel=channel)
    return [
        SessionsPerDayRow(_as_date(d, "day"), str(c), int(n))
        for d, c, n in wh.query(sql, params)
    ]


def run_df(
    wh: Warehouse, *, date_from: date, date_to: date, channel: str | None = None
) -> pd.DataFrame:
    """The same rows as a DataFrame (columns day, channel, sessions), e.g. for CSV."""
    rows = run(wh, date_from=date_from, date_to=date_to, channel=channel)
    return pd.DataFrame(rows, columns=list(SessionsPerDayRow._fields))
