"""Shared query parameters of report endpoints, validated into plain values."""

from __future__ import annotations

from datetime import date

from journeys.errors import InvalidQuery


def date_range(date_from: date | None, date_to: date | None) -> tuple[date | None, date | None]:
    """Both ends inclusive; a reversed range is the caller's mistake, said clearly."""
    if date_from and date_to and date_from > date_to:
        raise InvalidQuery(f"'from' ({date_from}) is after 'to' ({date_to})")
    return date_from, date_to
