"""Paths: exact counts of the event-type sequences abandoned instances took before they
dropped off, most common first.

An abandoned instance's path ends with its last event (nothing follows the drop-off).
`steps_only` (default) keeps only the definition's step types, so off-path noise does
not split otherwise identical paths; otherwise the full sequence is used. `limit` caps
the listed paths, and whatever is not listed is reported as an explicit `other` bucket
(instances and distinct paths), so the rows always add up to the abandoned total.
"""

from __future__ import annotations

from datetime import date
from typing import Any, NamedTuple

import pandas as pd

from journeys.definitions import JourneyDefinition
from journeys.errors import InvalidQuery
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _settled

MAX_LIMIT = 1000
_COLUMNS = (*j.COHORT_COLUMNS, "path_types")


class PathRow(NamedTuple):
    path: tuple[str, ...]
    dropped_at: str
    instances: int
    share: float | None


class PathsSummary(NamedTuple):
    abandoned: int
    distinct_paths: int
    other_instances: int  # abandoned instances whose path is not listed
    other_paths: int  # distinct paths not listed


def _parts(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None, dropped_at: str | None, steps_only: bool,
) -> tuple[str, str, dict[str, Any]]:
    extra = ["status = 'abandoned'"]
    if dropped_at is not None:
        if dropped_at not in journey.steps:
            raise InvalidQuery(f"{dropped_at!r} is not a step of journey {journey.name!r}")
        extra.append("dropped_at = %(dropped_at)s")
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel,
                            extra=extra)
    if dropped_at is not None:
        params["dropped_at"] = dropped_at
    if steps_only:
        params["steps"] = tuple(journey.steps)
        path = "arrayFilter(x -> x IN %(steps)s, path_types)"
    else:
        path = "path_types"
    return path, where, params


def build(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, dropped_at: str | None = None, steps_only: bool = True,
    limit: int = 20, split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """The `limit` most common (path, dropped_at) pairs; ties broken by the path text."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be within 1..{MAX_LIMIT}")
    path, where, params = _parts(database, journey, date_from=date_from, date_to=date_to,
                                 channel=channel, dropped_at=dropped_at, steps_only=steps_only)
    params.update(limit=limit, **_settled.params(split))
    sql = (
        f"SELECT {path} AS path, dropped_at, count() AS instances\n"
        f"{_settled.source(database, where, _COLUMNS, split)}\n"
        "GROUP BY path, dropped_at\n"
        "ORDER BY instances DESC, arrayStringConcat(path, ','), dropped_at\n"
        "LIMIT %(limit)s"
    )
    return sql, params


def build_summary(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, dropped_at: str | None = None, steps_only: bool = True,
    split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """Abandoned instances and distinct (path, dropped_at) pairs over the whole filter."""
    path, where, params = _parts(database, journey, date_from=date_from, date_to=date_to,
                                 channel=channel, dropped_at=dropped_at, steps_only=steps_only)
    sql = (
        f"SELECT count(), uniqExact({path}, dropped_at)\n"
        f"{_settled.source(database, where, _COLUMNS, split)}"
    )
    return sql, {**params, **_settled.params(split)}


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, dropped_at: str | None = None, steps_only: bool = True,
    limit: int = 20,
) -> tuple[list[PathRow], PathsSummary]:
    kw: dict[str, Any] = {"date_from": date_from, "date_to": date_to, "channel": channel,
                          "dropped_at": dropped_at, "steps_only": steps_only}

    def query(split: _settled.Split) -> tuple[list[Any], list[Any]]:
        return (wh.query(*build(wh.database, journey, limit=limit, split=split, **kw)),
                wh.query(*build_summary(wh.database, journey, split=split, **kw)))

    top_rows, summary = _settled.consistent(wh, date_from, date_to, query)
    top = [(tuple(str(t) for t in p), str(d), int(n)) for p, d, n in top_rows]
    abandoned, distinct = (int(x) for x in summary[0])
    rows = [PathRow(p, d, n, j.ratio(n, abandoned)) for p, d, n in top]
    listed = sum(r.instances for r in rows)
    return rows, PathsSummary(abandoned, distinct, abandoned - listed, distinct - len(rows))


def to_frame(rows: list[PathRow], summary: PathsSummary) -> pd.DataFrame:
    """CSV shape: path as 'a > b > c', plus a final '(other)' row when anything is unlisted."""
    data = [(" > ".join(r.path), r.dropped_at, r.instances, r.share) for r in rows]
    if summary.other_instances:
        data.append(("(other)", "", summary.other_instances,
                     j.ratio(summary.other_instances, summary.abandoned)))
    return pd.DataFrame(data, columns=["path", "dropped_at", "instances", "share"])
