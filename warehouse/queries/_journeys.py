"""What the journey report queries share: filters, breakdown dimensions, value shaping.

Every report reads `journey_instances` FINAL WHERE deleted = 0 (one row per live
instance at its latest version) of one definition version: the `version` of the
definition passed in (the current one, or a copy naming another version: the API's
`version=`; docs/semantics.md "Definition versions"). `from`/`to` are UTC calendar
days of `opened_at` (both inclusive) and the `channel` filter is the instance's entry
channel, so all reports count the same cohort.
Breakdown dimensions map to fixed SQL expressions; `context.<key>` (a key of the opening
event's context) is the one open-ended dimension: the key must match CONTEXT_KEY and is
passed as a parameter, its SQL alias comes from a fixed list. Anything else is InvalidQuery.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from journeys.definitions import JourneyDefinition
from journeys.errors import InvalidQuery

MAX_DAYS = 3660
MIN_DATE, MAX_DATE = date(1970, 1, 1), date(2105, 12, 31)  # a ClickHouse Date, 18.16 too

BASE_DIMENSIONS: Mapping[str, str] = {
    "channel": "entry_channel",
    "day": "toDate(opened_at)",
    "hour": "toUInt32(toStartOfHour(opened_at))",
    "context": "",  # any `context.<key>`: see _context_dim
}
"""Dimension -> SQL. `hour` is epoch seconds (turned into a UTC datetime in Python)."""


Versions = Sequence[tuple[str, str]]
"""(journey, definition version) pairs: the rows of several definitions, each at one
version (the API: each definition's current one unless `version=` names another)."""

VERSIONS_IN = "concat(journey, ':', definition_version) IN %(versions)s"
"""The rows of `Versions` on any table with both columns (journey_instances, alerts), on
both engines; its parameter is version_keys(...)."""


def version_keys(versions: Versions) -> list[str]:
    """The `versions` parameter of VERSIONS_IN: `journey:version` per pair (journey names
    have no ':', journeys/definitions.py). None given: [':'], which no row matches (an
    empty IN list is not SQL)."""
    return [f"{journey}:{version}" for journey, version in versions] or [":"]


LIVE = "deleted = 0"
"""Retracted instances (migration 0004) are tombstones: filtered after FINAL, in WHERE —
never PREWHERE, which would run before the collapse (docs/warehouse.md)."""


def as_date(value: date, name: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if not isinstance(value, date):
        raise InvalidQuery(f"{name} must be a date, got {type(value).__name__}")
    if not MIN_DATE <= value <= MAX_DATE:
        raise InvalidQuery(f"'{name}' ({value}) must be within {MIN_DATE}..{MAX_DATE}")
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
    params: dict[str, Any] = {"journey": journey.name, "date_from": lo, "date_to": hi,
                              "definition_version": journey.version}
    clauses = [
        "journey = %(journey)s",
        "definition_version = %(definition_version)s",
        LIVE,
        "toDate(opened_at) >= %(date_from)s",
        "toDate(opened_at) <= %(date_to)s",
        *extra,
    ]
    if channel is not None:
        clauses.append("entry_channel = %(channel)s")
        params["channel"] = channel
    return "WHERE " + " AND ".join(clauses), params


CONTEXT_PREFIX = "context."
CONTEXT_SEGMENT = r"[A-Za-z_][A-Za-z0-9_\-]{0,63}"  # one key segment (api/params.py too)
CONTEXT_KEY = re.compile(rf"^{CONTEXT_SEGMENT}(?:\.{CONTEXT_SEGMENT}){{0,2}}$")
"""A context key: up to 3 dotted segments (the writer flattens nested objects so)."""
MAX_CONTEXT_DIMS = 2


@dataclass(frozen=True, slots=True)
class Dim:
    """A breakdown dimension: its API name, a fixed SQL alias and SQL expression."""

    name: str
    alias: str
    sql: str

    @property
    def context_key(self) -> str | None:
        return self.name[len(CONTEXT_PREFIX):] if self.name.startswith(CONTEXT_PREFIX) else None


def _context_dim(name: str, i: int) -> Dim:
    key = name[len(CONTEXT_PREFIX):]
    if not CONTEXT_KEY.match(key):
        raise InvalidQuery(
            f"bad context breakdown {name!r}: use context.<key>, the key made of letters, "
            "digits, _ or - (nested keys dotted, up to 3 levels)")
    return Dim(name, f"ctx{i}", f"context_values[indexOf(context_keys, %(context_key{i})s)]")


def dimensions(
    breakdown: Sequence[str] | None, allowed: Mapping[str, str], default: Sequence[str] = ()
) -> list[Dim]:
    """The requested breakdown, in the order asked, or InvalidQuery. `context.<key>` is
    allowed wherever the report allows `context`."""
    names = list(default if breakdown is None else breakdown)
    def known(n: str) -> bool:
        if n.startswith(CONTEXT_PREFIX):
            return "context" in allowed
        return n in allowed and n != "context"

    unknown = [n for n in names if not known(n)]
    if unknown:
        listed = [n if n != "context" else "context.<key>" for n in allowed]
        raise InvalidQuery(
            f"unknown breakdown {', '.join(map(repr, unknown))}; allowed: {', '.join(listed)}"
        )
    if len(set(names)) != len(names):
        raise InvalidQuery(f"breakdown repeats a dimension: {names}")
    if "day" in names and "hour" in names:
        raise InvalidQuery("breakdown by both 'day' and 'hour' is redundant; pick one")
    dims: list[Dim] = []
    for n in names:
        if n.startswith(CONTEXT_PREFIX):
            dims.append(_context_dim(n, sum(d.context_key is not None for d in dims)))
        else:
            dims.append(Dim(n, n, allowed[n]))
    if sum(d.context_key is not None for d in dims) > MAX_CONTEXT_DIMS:
        raise InvalidQuery(f"at most {MAX_CONTEXT_DIMS} context breakdowns at once")
    return dims


COHORT_COLUMNS = ("instance_id", "opened_at", "entry_channel", "status", "furthest_step",
                  "dropped_at")
"""Columns a report's outer query may use besides arrays (see _settled.source)."""


def columns(dims: Sequence[Dim], *extra: str) -> tuple[str, ...]:
    """The columns a report's outer query reads: the cohort's, context arrays when a
    context dimension is asked for, and the report's own extras."""
    ctx = ("context_keys", "context_values") if any(d.context_key for d in dims) else ()
    return (*COHORT_COLUMNS, *ctx, *extra)


def dim_params(dims: Sequence[Dim]) -> dict[str, Any]:
    """Parameters the dimensions' SQL needs (the context keys)."""
    return {f"context_key{d.alias[3:]}": d.context_key for d in dims
            if d.context_key is not None}


def select_dims(dims: Sequence[Dim]) -> str:
    return "".join(f"{d.sql} AS {d.alias}, " for d in dims)


def group_by(dims: Sequence[Dim], *more: str) -> str:
    names = [d.alias for d in dims] + list(more)
    return ("GROUP BY " + ", ".join(names)) if names else ""


def order_by(dims: Sequence[Dim], *more: str) -> str:
    names = [d.alias for d in dims] + list(more)
    return ("ORDER BY " + ", ".join(names)) if names else ""


def dim_value(name: str, value: Any) -> Any:
    """Driver values -> API values: hour epoch seconds -> aware UTC datetime; a context
    key the opening event did not carry ('' in SQL) -> None."""
    if name == "hour":
        return datetime.fromtimestamp(int(value), tz=UTC)
    if name == "day":
        return as_date(value, "day")
    if name.startswith(CONTEXT_PREFIX):
        return str(value) or None
    return str(value)


def split_context(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """{key: value} of the context dimensions of one group, or None without any."""
    ctx = {n[len(CONTEXT_PREFIX):]: v for n, v in values.items() if n.startswith(CONTEXT_PREFIX)}
    return ctx or None


def dim_columns(row: Any, names: Sequence[str]) -> dict[str, Any]:
    """CSV cells of a row's requested dimensions (context ones as `context.<key>`)."""
    ctx = getattr(row, "context", None) or {}
    return {n: ctx.get(n[len(CONTEXT_PREFIX):]) if n.startswith(CONTEXT_PREFIX)
            else getattr(row, n) for n in names}


def sort_key(journey: JourneyDefinition, name: str, value: Any) -> Any:
    """Steps in definition order; missing context values first; others as they are."""
    if name == "step":
        return step_order(journey, value)
    if name.startswith(CONTEXT_PREFIX):
        return (value is not None, value or "")
    return value


def step_order(journey: JourneyDefinition, name: str) -> int:
    """Sort position of a step name; unknown names (older definitions) go last."""
    return journey.steps.index(name) if name in journey.steps else len(journey.steps)


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
