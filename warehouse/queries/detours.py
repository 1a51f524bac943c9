"""Detours: how often each kind happens at each step, and how common each kind is among
abandoned (and, for contrast, converted) instances.

Counts expand the per-instance detour arrays (ARRAY JOIN), so `detours` counts events
that caused a detour and `instances` the distinct instances with at least one. A capped
path (docs/semantics.md "Capped paths") has per-event arrays for its first events and
counts per (kind, step, channel) for the rest (capped_detour_*, migration 0008): both
are expanded together, each per-event detour counting 1, so the figures stay exact. `step`
is the furthest step reached just before the causing event (docs/semantics.md);
`detour_channel` is that event's channel, `channel` the instance's entry channel.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple

import pandas as pd

from journeys.definitions import JourneyDefinition
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _settled
from warehouse.writers_journeys import DETOUR_KINDS

_DETOUR_COLUMNS = ("detour_kinds", "detour_steps", "detour_channels", "capped_detour_kinds",
                   "capped_detour_steps", "capped_detour_channels", "capped_detour_counts")
_ARRAY_JOIN = (
    "ARRAY JOIN arrayConcat(detour_kinds, capped_detour_kinds) AS aj_kind,"
    " arrayConcat(detour_steps, capped_detour_steps) AS aj_step,"
    " arrayConcat(detour_channels, capped_detour_channels) AS aj_channel,"
    " arrayConcat(arrayMap(x -> toUInt32(1), detour_kinds), capped_detour_counts) AS aj_count")
_KIND_COLUMNS = ("detour_kinds", "capped_detour_kinds")
ALLOWED = {"step": "aj_step", "detour_channel": "aj_channel", **j.BASE_DIMENSIONS}
DEFAULT = ("step",)


class DetourRow(NamedTuple):
    kind: str
    step: str | None
    detour_channel: str | None
    channel: str | None
    day: date | None
    hour: datetime | None
    context: dict[str, str | None] | None  # context.<key> breakdowns: key -> value
    detours: int
    instances: int


class DetourShare(NamedTuple):
    kind: str
    abandoned_with: int
    abandoned: int
    abandoned_share: float | None
    converted_with: int
    converted: int
    converted_share: float | None


def build(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
    split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """Detours per kind and breakdown group (`split`: see _settled)."""
    dims = j.dimensions(breakdown, ALLOWED, DEFAULT)
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel)
    names = ", ".join(["kind", *(d.alias for d in dims)])
    cols = j.columns(dims, *_DETOUR_COLUMNS)
    sql = (
        f"SELECT aj_kind AS kind, {j.select_dims(dims)}"
        "sum(aj_count) AS detours, uniqExact(instance_id) AS instances\n"
        f"{_settled.source(database, where, cols, split, _ARRAY_JOIN)}\n"
        f"GROUP BY {names}\n"
        f"ORDER BY {names}"
    )
    return sql, {**params, **j.dim_params(dims), **_settled.params(split)}


def build_shares(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """Per closed status: instances, and instances having each detour kind."""
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel,
                            extra=("status IN ('abandoned', 'converted')",))
    has = []
    for i, kind in enumerate(DETOUR_KINDS):
        params[f"kind{i}"] = kind
        has.append(f"countIf(has(detour_kinds, %(kind{i})s)"
                   f" OR has(capped_detour_kinds, %(kind{i})s)) AS with_{i}")
    sql = (
        f"SELECT status, count() AS instances, {', '.join(has)}\n"
        f"{_settled.source(database, where, (*j.COHORT_COLUMNS, *_KIND_COLUMNS), split)}\n"
        "GROUP BY status\nORDER BY status"
    )
    return sql, {**params, **_settled.params(split)}


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
) -> tuple[list[DetourRow], list[DetourShare]]:
    """Rows by kind then breakdown (steps in definition order); one share row per kind."""
    kw: dict[str, Any] = {"date_from": date_from, "date_to": date_to, "channel": channel}

    def query(split: _settled.Split) -> tuple[list[Any], list[Any]]:
        return (wh.query(*build(wh.database, journey, breakdown=breakdown, split=split,
                                **kw)),
                wh.query(*build_shares(wh.database, journey, split=split, **kw)))

    grouped, share_rows = _settled.consistent(wh, date_from, date_to, query)
    dims = [d.name for d in j.dimensions(breakdown, ALLOWED, DEFAULT)]
    found = []
    for r in grouped:
        values = {n: j.dim_value(n, v) for n, v in zip(dims, r[1: 1 + len(dims)], strict=True)}
        found.append((str(r[0]), values, int(r[-2]), int(r[-1])))

    def order(item: tuple[str, dict[str, Any], int, int]) -> tuple[Any, ...]:
        kind, v = item[0], item[1]
        rest = tuple(j.sort_key(journey, n, v[n]) for n in dims)
        return (DETOUR_KINDS.index(kind) if kind in DETOUR_KINDS else 99, kind, *rest)

    rows = [
        DetourRow(kind, v.get("step"), v.get("detour_channel"), v.get("channel"), v.get("day"),
                  v.get("hour"), j.split_context(v), n, inst)
        for kind, v, n, inst in sorted(found, key=order)
    ]
    by_status = {str(r[0]): [int(x) for x in r[1:]] for r in share_rows}
    zero = [0] * (1 + len(DETOUR_KINDS))
    ab, cv = by_status.get("abandoned", zero), by_status.get("converted", zero)
    shares = [
        DetourShare(kind, ab[i + 1], ab[0], j.ratio(ab[i + 1], ab[0]), cv[i + 1], cv[0],
                    j.ratio(cv[i + 1], cv[0]))
        for i, kind in enumerate(DETOUR_KINDS)
    ]
    return rows, shares


def to_frame(rows: list[DetourRow], breakdown: list[str] | None) -> pd.DataFrame:
    names = list(DEFAULT if breakdown is None else breakdown)
    data = [{"kind": r.kind, **j.dim_columns(r, names), "detours": r.detours,
             "instances": r.instances} for r in rows]
    return pd.DataFrame(data, columns=["kind", *names, "detours", "instances"])
