"""Touchpoint types outside the definition: the event types that are not steps but occur
most inside journeys, and where (candidates for a step the definition is missing).

Every event of an instance's stored path whose type is not a step counts, at its
*position*: the furthest step the instance had reached when it happened (so
`after_step = cart` means "between reaching cart and reaching the next step"). Per type:
events, instances with at least one, and how many of those converted / were abandoned
against the cohort's converted / abandoned instances (a type common among abandoned and
rare among converted instances is worth a look). `in_off_path` says whether the
definition lists the type as off-path (null: the definition lists none, so every
non-step type counts as off-path). A capped path (docs/semantics.md "Capped paths")
contributes the events it stores (its first ones).
"""

from __future__ import annotations

from datetime import date
from typing import Any, NamedTuple

import pandas as pd

from journeys.definitions import JourneyDefinition
from journeys.errors import InvalidQuery
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _paths, _settled

MAX_LIMIT = 1000
_COLUMNS = (*j.COHORT_COLUMNS, "path_types")


class Position(NamedTuple):
    after_step: str
    events: int
    instances: int


class TypeRow(NamedTuple):
    type: str
    in_off_path: bool | None
    events: int
    instances: int
    share_of_instances: float | None  # of the cohort's instances
    converted_with: int
    converted_share: float | None  # converted_with / the cohort's converted
    abandoned_with: int
    abandoned_share: float | None
    positions: tuple[Position, ...]  # most events first


class TypesSummary(NamedTuple):
    instances: int
    converted: int
    abandoned: int
    types_found: int


def build(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, by_position: bool = True,
    split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """Per (type, position), or per type over all positions (`by_position` False: an
    instance counts once): events, instances, converted and abandoned instances."""
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel)
    steps, step_params = _paths.steps_array(journey)
    reach = f"arrayMap(s -> {_paths.reach_position('s', steps)}, range(%(n_steps)s))"
    after = ("arrayMap(i -> toInt64(length(arrayFilter(r -> r > 0 AND r <= i, reach))) - 1, "
             "arrayEnumerate(path_types))")
    keys = "type, after" if by_position else "type"
    sql = (
        f"SELECT {keys}, count() AS events, uniqExact(instance_id) AS instances,\n"
        "    uniqExactIf(instance_id, status = 'converted'),"
        " uniqExactIf(instance_id, status = 'abandoned')\nFROM (\n"
        f"    SELECT instance_id, status, path_types, {reach} AS reach, {after} AS afters\n"
        f"    {_settled.source(database, where, _COLUMNS, split)}\n)\n"
        "ARRAY JOIN path_types AS type, afters AS after\n"
        f"WHERE {_paths.step_index('type', steps)} = 0\n"
        f"GROUP BY {keys}\nORDER BY {keys}"
    )
    return sql, {**params, **step_params, "n_steps": len(journey.steps),
                 **_settled.params(split)}


def build_totals(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """The cohort's instances, converted and abandoned."""
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel)
    sql = ("SELECT count(), countIf(status = 'converted'), countIf(status = 'abandoned')\n"
           f"{_settled.source(database, where, j.COHORT_COLUMNS, split)}")
    return sql, {**params, **_settled.params(split)}


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, limit: int = 20,
) -> tuple[list[TypeRow], TypesSummary]:
    """The `limit` types found in most instances (ties: most events, then name)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be within 1..{MAX_LIMIT}")
    kw: dict[str, Any] = {"date_from": date_from, "date_to": date_to, "channel": channel}

    def query(split: _settled.Split) -> tuple[list[Any], list[Any], list[Any]]:
        return (wh.query(*build(wh.database, journey, split=split, **kw)),
                wh.query(*build(wh.database, journey, by_position=False, split=split, **kw)),
                wh.query(*build_totals(wh.database, journey, split=split, **kw)))

    positions, types, totals = _settled.consistent(wh, date_from, date_to, query)
    n, converted, abandoned = (int(x) for x in totals[0])
    where: dict[str, list[Position]] = {}
    for t, after, events, inst, _, _ in positions:
        step = journey.steps[int(after)] if 0 <= int(after) < len(journey.steps) else "?"
        where.setdefault(str(t), []).append(Position(step, int(events), int(inst)))
    listed = journey.off_path
    rows = [
        TypeRow(str(t), None if listed is None else str(t) in listed, int(ev), int(inst),
                j.ratio(int(inst), n), int(cw), j.ratio(int(cw), converted), int(aw),
                j.ratio(int(aw), abandoned),
                tuple(sorted(where[str(t)], key=lambda p: (-p.events, -p.instances,
                                                          journey.steps.index(p.after_step)
                                                          if p.after_step in journey.steps
                                                          else 99))))
        for t, ev, inst, cw, aw in types
    ]
    rows.sort(key=lambda r: (-r.instances, -r.events, r.type))
    return rows[:limit], TypesSummary(n, converted, abandoned, len(rows))


def to_frame(rows: list[TypeRow]) -> pd.DataFrame:
    """CSV: one row per (type, position), the type's own figures repeated."""
    cols = [f for f in TypeRow._fields if f != "positions"]
    data = [{**{c: getattr(r, c) for c in cols}, "after_step": p.after_step,
             "events_after_step": p.events, "instances_after_step": p.instances}
            for r in rows for p in r.positions]
    return pd.DataFrame(data, columns=[*cols, "after_step", "events_after_step",
                                       "instances_after_step"])
