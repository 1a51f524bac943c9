"""Compare a report with the previous period: every figure of funnel, abandonment and
detours gets its value in the period of the same length that ends the day before `from`
(warehouse.queries._stats.previous_period), the change, and, for rates, the two-sided
p-value of a two-proportion z-test (_stats.two_proportion_p).

Works on the reports' own results (both periods run through the same module), so the
previous figures are exactly what the report says for that range. Rows are matched by
their group (dimensions, step, kind); a group found in one period only is listed with
zeros for the other (its rates: null), so nothing that disappeared goes unseen. `day`
and `hour` breakdowns have no common groups across periods: refused (use the trend).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import pandas as pd

from journeys.definitions import JourneyDefinition
from journeys.errors import InvalidQuery
from warehouse.queries import _journeys as j
from warehouse.queries._stats import change, two_proportion_p
from warehouse.writers_journeys import DETOUR_KINDS

R = TypeVar("R", bound=NamedTuple)
Fraction = tuple[int, int]  # (x, n) of a rate x / n
TIME_DIMENSIONS = ("day", "hour")


class Change(NamedTuple):
    previous: float | None  # counts absent in the previous period are 0; rates None
    change: float | None  # current - previous (rates: in points of proportion)
    relative_change: float | None  # change / previous (None when previous is 0)
    p_value: float | None  # rates: two-proportion z-test, two-sided; counts: None


Compared = dict[str, Change]


def check_breakdown(breakdown: Sequence[str] | None) -> None:
    """A day/hour group never recurs in another period: nothing to compare."""
    clash = [n for n in breakdown or () if n in TIME_DIMENSIONS]
    if clash:
        raise InvalidQuery(f"compare=previous cannot be combined with a {clash[0]!r} "
                           "breakdown (no day recurs in the previous period); use the trend "
                           "report for figures over time")


def compared(cur: Any, prev: Any | None, counts: Sequence[str],
             rates: Mapping[str, tuple[Fraction, Fraction | None]]) -> Compared:
    """Per figure: counts as numbers, `rates` by name -> ((x, n) now, (x, n) before)."""
    out: Compared = {}
    for name in counts:
        before = getattr(prev, name) if prev is not None else 0
        out[name] = Change(before, *change(getattr(cur, name), before), None)
    for name, (now, then) in rates.items():
        before = getattr(prev, name) if prev is not None else None
        p = two_proportion_p(*now, *then) if then is not None else None
        out[name] = Change(before, *change(getattr(cur, name), before), p)
    return out


def _key(row: Any, fields: Sequence[str]) -> tuple[Any, ...]:
    return tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v
                 for v in (getattr(row, f) for f in fields))


def merge(cur: Sequence[R], prev: Sequence[R], fields: Sequence[str], zero: Callable[[R], R],
          order: Callable[[R], Any]) -> list[tuple[R, R | None]]:
    """(current row, previous row or None) for the union of both periods' groups (keyed
    by `fields`); a group only in the previous period gets `zero(previous row)` as its
    current row. Sorted by `order` (the report's row order)."""
    before = {_key(r, fields): r for r in prev}
    pairs = [(r, before.pop(_key(r, fields), None)) for r in cur]
    pairs += [(zero(r), r) for r in before.values()]
    return sorted(pairs, key=lambda p: order(p[0]))


def zeroed(row: R, counts: Sequence[str], rates: Sequence[str]) -> R:
    """The row with its counts 0 and its rates None (a group absent in a period)."""
    return row._replace(**dict.fromkeys(counts, 0), **dict.fromkeys(rates, None))


def with_columns(df: pd.DataFrame, comparisons: Sequence[Compared],
                 rates: Sequence[str]) -> pd.DataFrame:
    """CSV columns of a comparison: <figure>_previous, _change (and _p_value for rates)
    after the report's own, one row per report row (same order)."""
    if not comparisons:
        return df
    out = df.copy()
    for name in comparisons[0]:
        out[f"{name}_previous"] = [c[name].previous for c in comparisons]
        out[f"{name}_change"] = [c[name].change for c in comparisons]
        if name in rates:
            out[f"{name}_p_value"] = [c[name].p_value for c in comparisons]
    return out


def _order(journey: JourneyDefinition, names: Sequence[str],
           *last: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    """A report's row order: its dimensions as the report sorts them, then `last`."""
    def key(row: Any) -> tuple[Any, ...]:
        values = j.dim_columns(row, names)
        return (*(j.sort_key(journey, n, values[n]) for n in names), *(f(row) for f in last))
    return key


_DIMS = ("channel", "day", "hour", "context")
FUNNEL_COUNTS = ("instances", "converted", "dropped_here")
TOTAL_COUNTS = ("opened", "converted", "abandoned", "open")


def _group(row: Any) -> tuple[Any, ...]:
    return _key(row, _DIMS)


def funnel(journey: JourneyDefinition, breakdown: Sequence[str] | None,
           cur: tuple[list[Any], Any], prev: tuple[list[Any], Any],
           ) -> tuple[list[tuple[Any, Compared]], Compared]:
    """Funnel rows (per group and step) and totals, each with its comparison; the
    share_of_opened test is instances / the group's opened in each period."""
    (rows, totals), (prev_rows, prev_totals) = cur, prev
    opened = [{_group(r): r.instances for r in rs if r.step_index == 0} for rs in (rows, prev_rows)]
    pairs = merge(rows, prev_rows, (*_DIMS, "step"),
                  lambda r: zeroed(r, FUNNEL_COUNTS, ("share_of_opened",)),
                  _order(journey, breakdown or (), lambda r: r.step_index))
    out = []
    for r, p in pairs:
        then = (p.instances, opened[1].get(_group(p), 0)) if p is not None else None
        out.append((r, compared(r, p, FUNNEL_COUNTS, {
            "share_of_opened": ((r.instances, opened[0].get(_group(r), 0)), then)})))
    return out, compared(totals, prev_totals, TOTAL_COUNTS, {
        "conversion_rate": ((totals.converted, totals.opened),
                            (prev_totals.converted, prev_totals.opened))})


def abandonment(journey: JourneyDefinition, breakdown: Sequence[str],
                cur: tuple[list[Any], Any], prev: tuple[list[Any], Any],
                ) -> tuple[list[tuple[Any, Compared]], Compared]:
    """Abandonment rows and totals with their comparisons; share_of_abandoned is tested
    as abandoned / all abandoned in each period."""
    (rows, totals), (prev_rows, prev_totals) = cur, prev
    pairs = merge(rows, prev_rows, ("step", *_DIMS),
                  lambda r: zeroed(r, ("abandoned",), ("share_of_abandoned",)),
                  _order(journey, breakdown))
    out = [(r, compared(r, p, ("abandoned",), {"share_of_abandoned": (
        (r.abandoned, totals.abandoned),
        (p.abandoned, prev_totals.abandoned) if p is not None else None)}))
        for r, p in pairs]
    return out, compared(totals, prev_totals, TOTAL_COUNTS, {
        "abandonment_rate": ((totals.abandoned, totals.opened),
                             (prev_totals.abandoned, prev_totals.opened))})


def detours(journey: JourneyDefinition, breakdown: Sequence[str],
            cur: tuple[list[Any], list[Any]], prev: tuple[list[Any], list[Any]],
            ) -> tuple[list[tuple[Any, Compared]], list[tuple[Any, Compared]]]:
    """Detour rows (counts) and per-kind shares (abandoned_share, converted_share tested
    as instances with the kind / instances of that status)."""
    (rows, shares), (prev_rows, prev_shares) = cur, prev
    kinds = {k: i for i, k in enumerate(DETOUR_KINDS)}
    pairs = merge(rows, prev_rows, ("kind", "step", "detour_channel", *_DIMS),
                  lambda r: zeroed(r, ("detours", "instances"), ()),
                  _order(journey, breakdown, lambda r: 0))
    pairs.sort(key=lambda p: kinds.get(p[0].kind, len(kinds)))  # stable: kind first
    counts = ("abandoned_with", "abandoned", "converted_with", "converted")
    before = {s.kind: s for s in prev_shares}
    out_shares = []
    for s in shares:
        p = before[s.kind]
        out_shares.append((s, compared(s, p, counts, {
            "abandoned_share": ((s.abandoned_with, s.abandoned),
                                (p.abandoned_with, p.abandoned)),
            "converted_share": ((s.converted_with, s.converted),
                                (p.converted_with, p.converted))})))
    return [(r, compared(r, p, ("detours", "instances"), {})) for r, p in pairs], out_shares
