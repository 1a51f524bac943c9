"""Shared query parameters of report endpoints, validated into plain values."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from journeys.errors import InvalidQuery

DEFAULT_DAYS = 90
MAX_DAYS = 3660
MIN_DATE, MAX_DATE = date(1970, 1, 1), date(2105, 12, 31)
"""What a ClickHouse `Date` holds on every engine we support (18.16 included)."""


def date_range(date_from: date | None, date_to: date | None) -> tuple[date, date]:
    """Both ends inclusive. Defaults: `to` = today (UTC), `from` = 90 days before `to`.
    A reversed or absurdly long range is the caller's mistake, said clearly."""
    hi = date_to or datetime.now(UTC).date()
    lo = date_from or hi - timedelta(days=DEFAULT_DAYS)
    for name, day in (("from", lo), ("to", hi)):
        if not MIN_DATE <= day <= MAX_DATE:
            raise InvalidQuery(f"'{name}' ({day}) must be within {MIN_DATE}..{MAX_DATE}")
    if lo > hi:
        raise InvalidQuery(f"'from' ({lo}) is after 'to' ({hi})")
    if (hi - lo).days > MAX_DAYS:
        raise InvalidQuery(f"range {lo}..{hi} is longer than {MAX_DAYS} days")
    return lo, hi
