"""What the journey report queries share: filters, breakdown dimensions, value shaping.

Every report reads `journey_instances` FINAL (one row per instance at its latest
version). `from`/`to` are UTC calendar days of `opened_at` (both inclusive) and the
`channel` filter is the instance's entry channel, so all reports count the same cohort.
Breakdown dimensions map to fixed SQL expressions; anything else is InvalidQuery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from journeys.definitions import JourneyDefinition
from journeys.errors import InvalidQuery
from warehouse.sql import qualified
from warehouse.tables import JOURNEY_INSTANCES

MAX_DAYS = 3660

BASE_DIMENSIONS: Mapping[str, str] = {
    "channel": "entry_channel",
    "day": "toDate(opened_at)",
    "hour": "toUInt32(toStartOfHour(opened_at))",
}
"""Dimension -> SQL. `hour` is epoch seconds (turned into a UTC datetime in Python)."""


def table(database: str) -> str:
    return f"{qualified(database, JOURNEY_INSTANCES.name)} FINAL"


def as_date(value: date, name: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if not isinstance(value, date):
        raise InvalidQuery(f"{name} must be a date, got {type(value).__name__}")
    return value


def where(
    journey: JourneyDefinition, *, date_from: date, date_to: date, channel: str | None,
    extra: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """`WHERE ...` for the common filters, plus fixed extra clauses."""
    lo, hi = as_date(date_from, "from"), as_date(date_to, "to")
    if lo > hi:
        raise InvalidQuery(f"'from' ({lo}) is after 'to' ({hi})")
    if (hi - lo).days >= MAX_DAYS:
        raise InvalidQuery(f"the range {lo}..{hi} is longer than {MAX_DAYS} days")
    params: dict[str, Any] = {"journey": journey.name, "date_from": lo, "date_to": hi}
    clauses = [
        "journey = %(journey)s",
        "toDate(opened_at) >= %(date_from)s",
        "toDate(opened_at) <= %(date_to)s",
        *extra,
    ]
    if channel is not None:
        clauses.append("entry_channel = %(channel)s")
        params["channel"] = channel
    return "WHERE " + " AND ".join(clauses), params


def dimensions(
    breakdown: Sequence[str] | None, allowed: Mapping[str, str], default: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """[(name, sql)] for the requested breakdown, in the order asked, or InvalidQuery."""
    names = list(default if breakdown is None else breakdown)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise InvalidQuery(
            f"unknown breakdown {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )
    if len(set(names)) != len(names):
        raise InvalidQuery(f"breakdown repeats a dimension: {names}")
    if "day" in names and "hour" in names:
        raise InvalidQuery("breakdown by both 'day' and 'hour' is redundant; pick one")
    return [(n, allowed[n]) for n in names]


def select_dims(dims: Sequence[tuple[str, str]]) -> str:
    return "".join(f"{sql} AS {name}, " for name, sql in dims)


def group_by(dims: Sequence[tuple[str, str]], *more: str) -> str:
    names = [n for n, _ in dims] + list(more)
    return ("GROUP BY " + ", ".join(names)) if names else ""


def dim_value(name: str, value: Any) -> Any:
    """Driver values -> API values: hour epoch seconds -> aware UTC datetime."""
    if name == "hour":
        return datetime.fromtimestamp(int(value), tz=UTC)
    if name == "day":
        return as_date(value, "day")
    return str(value)


def step_order(journey: JourneyDefinition, name: str) -> int:
    """Sort position of a step name; unknown names (older definitions) go last."""
    return journey.steps.index(name) if name in journey.steps else len(journey.steps)


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
