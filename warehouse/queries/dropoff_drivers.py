"""Drop-off drivers: what sets apart the instances that dropped at a step from those that
went on past it — entry channel, last channel, context values, detour kinds.

Population at step s (not the goal): the cohort's instances that reached s and either
were abandoned there (`dropped`: furthest step = s) or went past it (`went on`: furthest
step > s, whatever their status); instances still open at s are undecided and left out.
Each instance carries features (name, value):
- `entry_channel`: the opening event's channel;
- `last_channel`: the channel of its last event at s — the last event of a dropped
  instance, or the event just before the one that took a went-on instance past s (read
  off the stored path; left out when a capped path does not show it);
- `context.<key>`: every field of the opening event's context;
- `detour`: each detour kind that happened at s (its step is s), capped counts included.
For each (feature, value): drop rate with it = dropped with / instances with; lift = that
/ the drop rate of the whole population; p_value = two-proportion z-test (two-sided) of
the drop rate with the feature against the drop rate without it. Drivers are the
over-represented ones (lift > 1), most significant first. Many features are tested at
once: `features_tested` says how many, for a multiple-testing reading (e.g. Bonferroni).
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
from warehouse.queries._stats import two_proportion_p

MAX_TOP = 100
_COLUMNS = (*j.COHORT_COLUMNS, "context_keys", "context_values", "path_types",
            "path_channels", "path_truncated", "detour_kinds", "detour_steps",
            "capped_detour_kinds", "capped_detour_steps")


class Driver(NamedTuple):
    feature: str  # entry_channel | last_channel | context.<key> | detour
    value: str
    dropped_with: int
    went_on_with: int
    share_of_dropped: float | None
    share_of_went_on: float | None
    drop_rate: float | None  # dropped_with / (dropped_with + went_on_with)
    lift: float | None  # drop_rate / the population's drop rate
    p_value: float | None


class DriversSummary(NamedTuple):
    step: str
    step_index: int
    dropped: int
    went_on: int
    drop_rate: float | None
    features_tested: int
    over_represented: int


def _step(journey: JourneyDefinition, step: str) -> int:
    if step not in journey.steps:
        raise InvalidQuery(f"{step!r} is not a step of journey {journey.name!r}")
    k = journey.steps.index(step)
    if k == len(journey.steps) - 1:
        raise InvalidQuery(f"{step!r} is the goal of journey {journey.name!r}: nobody drops "
                           "there; ask for an earlier step")
    return k


def _where(journey: JourneyDefinition, date_from: date, date_to: date, channel: str | None,
           step: str) -> tuple[str, dict[str, Any]]:
    k = _step(journey, step)
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel,
                            extra=("furthest_step >= %(k)s",
                                   "(furthest_step > %(k)s OR status = 'abandoned')"))
    return where, {**params, "k": k, "step": step}


def build(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date, step: str,
    channel: str | None = None, split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """Per (feature, value): instances with it that dropped at `step` / went on."""
    where, params = _where(journey, date_from, date_to, channel, step)
    steps, step_params = _paths.steps_array(journey)
    past = _paths.reach_position("%(k)s + 1", steps)
    last = ("if(went_on, if(p_next > 0, path_channels[p_next - 1], ''), "
            "if(path_truncated = 1, '', path_channels[-1]))")
    detours = ("arrayDistinct(arrayFilter((kd, st) -> st = %(step)s, arrayConcat(detour_kinds, "
               "capped_detour_kinds), arrayConcat(detour_steps, capped_detour_steps)))")
    inner = (
        f"SELECT furthest_step > %(k)s AS went_on, {past} AS p_next,\n"
        f"    arrayConcat(['entry_channel', 'last_channel'], arrayMap(x -> concat('context.', "
        f"x), context_keys), arrayMap(x -> 'detour', {detours})) AS names,\n"
        f"    arrayConcat([entry_channel, {last}], context_values, {detours}) AS vals\n"
        f"{_settled.source(database, where, _COLUMNS, split)}"
    )
    sql = (
        "SELECT feature, value, countIf(NOT went_on) AS dropped_with, countIf(went_on) AS "
        f"went_on_with\nFROM (\n{inner}\n)\nARRAY JOIN names AS feature, vals AS value\n"
        "WHERE NOT (feature = 'last_channel' AND value = '')\n"
        "GROUP BY feature, value\nORDER BY feature, value"
    )
    return sql, {**params, **step_params, **_settled.params(split)}


def build_totals(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date, step: str,
    channel: str | None = None, split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    where, params = _where(journey, date_from, date_to, channel, step)
    sql = ("SELECT countIf(furthest_step = %(k)s), countIf(furthest_step > %(k)s)\n"
           f"{_settled.source(database, where, j.COHORT_COLUMNS, split)}")
    return sql, {**params, **_settled.params(split)}


def _driver(feature: str, value: str, dw: int, gw: int, dropped: int, went_on: int) -> Driver:
    rate = j.ratio(dw, dw + gw)
    overall = j.ratio(dropped, dropped + went_on)
    lift = rate / overall if rate is not None and overall else None
    p = two_proportion_p(dw, dw + gw, dropped - dw, dropped + went_on - dw - gw)
    return Driver(feature, value, dw, gw, j.ratio(dw, dropped), j.ratio(gw, went_on), rate,
                  lift, p)


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date, step: str,
    channel: str | None = None, top: int = 10,
) -> tuple[list[Driver], DriversSummary]:
    """The `top` over-represented features (lowest p-value, then highest lift, most
    dropped, name, value) and the population's summary."""
    if not 1 <= top <= MAX_TOP:
        raise InvalidQuery(f"top must be within 1..{MAX_TOP}")
    kw: dict[str, Any] = {"date_from": date_from, "date_to": date_to, "channel": channel,
                          "step": step}

    def query(split: _settled.Split) -> tuple[list[Any], list[Any]]:
        return (wh.query(*build(wh.database, journey, split=split, **kw)),
                wh.query(*build_totals(wh.database, journey, split=split, **kw)))

    rows, totals = _settled.consistent(wh, date_from, date_to, query)
    dropped, went_on = (int(x) for x in totals[0])
    all_ = [_driver(str(f), str(v), int(d), int(g), dropped, went_on) for f, v, d, g in rows]
    over = [d for d in all_ if d.lift is not None and d.lift > 1]
    over.sort(key=lambda d: (d.p_value if d.p_value is not None else 2.0, -(d.lift or 0),
                             -d.dropped_with, d.feature, d.value))
    summary = DriversSummary(step, journey.steps.index(step), dropped, went_on,
                             j.ratio(dropped, dropped + went_on), len(all_), len(over))
    return over[:top], summary


def to_frame(rows: list[Driver]) -> pd.DataFrame:
    return pd.DataFrame([r._asdict() for r in rows], columns=list(Driver._fields))
