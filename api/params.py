"""Shared query parameters of report endpoints, validated into plain values."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from anyio import to_thread
from pydantic import BeforeValidator

from api.deps import ApiState
from journeys.errors import InvalidQuery
from warehouse.queries import data_span

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _iso_only(value: Any) -> Any:
    """Pydantic reads a bare number as epoch seconds: `to=0.5` was 1970-01-01 and
    answered 200. Query times are ISO-8601 text only."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("an ISO-8601 date or date-time is expected, not a number")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]
"""A query parameter given as ISO-8601 text (a number is refused)."""
IsoDate = Annotated[date, BeforeValidator(_iso_only)]

DEFAULT_DAYS = 90
MAX_DAYS = 3660
MIN_DATE, MAX_DATE = date(1970, 1, 1), date(2105, 12, 31)
"""What a ClickHouse `Date` holds on every engine we support (18.16 included)."""


def date_range(date_from: date | None, date_to: date | None,
               last_day: date | None = None) -> tuple[date, date]:
    """Both ends inclusive. Defaults: `to` = the last day with data (`last_day`, see
    `last_data_day`), else today (UTC); `from` = 90 days before `to`. A reversed or
    absurdly long range is the caller's mistake, said clearly."""
    hi = date_to or last_day or datetime.now(UTC).date()
    lo = date_from or hi - timedelta(days=DEFAULT_DAYS)
    for name, day in (("from", lo), ("to", hi)):
        if not MIN_DATE <= day <= MAX_DATE:
            raise InvalidQuery(f"'{name}' ({day}) must be within {MIN_DATE}..{MAX_DATE}")
    if lo > hi:
        raise InvalidQuery(f"'from' ({lo}) is after 'to' ({hi})")
    if (hi - lo).days > MAX_DAYS:
        raise InvalidQuery(f"range {lo}..{hi} is longer than {MAX_DAYS} days")
    return lo, hi


LAST_DAY_TTL_S = 30.0  # how long the last day with data is reused between requests


async def last_data_day(st: ApiState, table: str) -> date | None:
    """The last UTC day of `table` with data (warehouse.queries.data_span), looked up
    at most every LAST_DAY_TTL_S per API process: a history loaded last year must not
    report zeros by default because its range ended today."""
    now = time.monotonic()
    hit = st.last_days.get(table)
    if hit is not None and now - hit[0] < LAST_DAY_TTL_S:
        return hit[1]
    day = await to_thread.run_sync(lambda: data_span.last_day(st.warehouse, table))
    st.last_days[table] = (now, day)
    return day
