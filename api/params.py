"""Shared query parameters of report endpoints, validated into plain values."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from anyio import to_thread
from fastapi import Query
from pydantic import BeforeValidator, WithJsonSchema

from api.deps import ApiState
from journeys.errors import InvalidQuery
from warehouse.queries import data_span
from warehouse.queries._journeys import CONTEXT_SEGMENT as _SEGMENT

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _iso_only(value: Any) -> Any:
    """Pydantic reads a bare number as epoch seconds: `to=0.5` was 1970-01-01 and
    answered 200. Query times are ISO-8601 text only."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("an ISO-8601 date or date-time is expected, not a number")
    return value


_YEARS = r"(19[7-9][0-9]|20[0-9][0-9]|210[0-5])"  # MIN_DATE..MAX_DATE, below

IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]
"""A query parameter given as ISO-8601 text (a number is refused)."""
IsoDate = Annotated[date, BeforeValidator(_iso_only), WithJsonSchema(
    {"type": "string", "format": "date", "pattern": f"^{_YEARS}-[0-9]{{2}}-[0-9]{{2}}$"})]
"""A UTC day as ISO-8601 text, 1970-01-01..2105-12-31 (what a ClickHouse Date holds)."""

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


def breakdown_query(allowed: Iterable[str], description: str, examples: Any) -> Any:
    """The `breakdown` query parameter of a report whose query module allows `allowed`
    (its ALLOWED mapping): repeated or comma-separated names, each one of them or
    `context.<key>` (warehouse.queries CONTEXT_KEY). The schema states exactly what is
    accepted; the rules across names (no repeats, not both day and hour, at most two
    context keys) are documented 422s."""
    names = "|".join(sorted(re.escape(n) for n in allowed if n != "context"))
    item = rf"({names}|context\.{_SEGMENT}(\.{_SEGMENT}){{0,2}})"
    schema = {"type": "string", "pattern": rf"^{item}( *, *{item})*$", "maxLength": 400}
    # the schema documents it; the query module validates it, with a message that
    # names what is allowed (a bare pattern mismatch would not)
    return Annotated[list[Annotated[str, WithJsonSchema(schema)]] | None,
                     Query(description=description, openapi_examples=examples)]
