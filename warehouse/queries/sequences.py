"""Designed vs actual order: the step sequences instances really took, most frequent
first, and the share of instances that followed the definition's order.

An instance's *step sequence* is its path's step events in order (other event types left
out), with back-to-back repeats of one step collapsed (a refresh is not a change of
order). It *followed the designed order* when that sequence is the definition's steps
from the entry up to its furthest step: no step skipped, none revisited after a later one
(a converted instance: exactly the steps; an abandoned or open one: a prefix of them).
A capped path (docs/semantics.md "Capped paths") shows its first events only, so its
sequence is not known: such instances are counted as `truncated` and left out of the
sequences and of the followed share, never guessed.
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
from warehouse.writers_journeys import STATUSES

MAX_LIMIT = 1000
_COLUMNS = (*j.COHORT_COLUMNS, "path_types", "path_truncated")


class SequenceRow(NamedTuple):
    sequence: tuple[str, ...]
    designed: bool  # the designed order (or a prefix of it)
    instances: int
    converted: int
    abandoned: int
    open: int
    share: float | None  # of the instances with a complete path


class StatusSummary(NamedTuple):
    status: str
    instances: int
    truncated: int  # capped paths: sequence unknown
    followed: int
    followed_share: float | None  # followed / (instances - truncated)


class SequencesSummary(NamedTuple):
    instances: int
    truncated: int
    followed: int
    followed_share: float | None
    distinct_sequences: int
    other_instances: int  # complete-path instances whose sequence is not listed
    other_sequences: int


def _inner(database: str, journey: JourneyDefinition, date_from: date, date_to: date,
           channel: str | None, split: _settled.Split) -> tuple[str, dict[str, Any]]:
    """Per instance: status, path_truncated, seq (the step sequence), followed."""
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel)
    steps, step_params = _paths.steps_array(journey)
    sql = (
        "SELECT status, path_truncated, "
        f"arrayFilter(x -> {_paths.step_index('x', steps)} > 0, path_types) AS s,\n"
        "    arrayFilter((x, prev) -> x != prev, s, arrayPushFront(arrayPopBack(s), '')) AS seq,"
        f"\n    path_truncated = 0 AND seq = arraySlice({steps}, 1, length(seq)) AS followed\n"
        f"{_settled.source(database, where, _COLUMNS, split)}"
    )
    return sql, {**params, **step_params, **_settled.params(split)}


def build(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, limit: int = 20,
    split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """The `limit` most frequent sequences of complete paths (ties: sequence text)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be within 1..{MAX_LIMIT}")
    inner, params = _inner(database, journey, date_from, date_to, channel, split)
    sql = (
        "SELECT seq, any(followed), count() AS instances, countIf(status = 'converted'), "
        "countIf(status = 'abandoned'), countIf(status = 'open')\n"
        f"FROM (\n{inner}\n)\nWHERE path_truncated = 0\nGROUP BY seq\n"
        "ORDER BY instances DESC, arrayStringConcat(seq, ' > ')\nLIMIT %(limit)s"
    )
    return sql, {**params, "limit": limit}


def build_summary(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """One row: per status (STATUSES order) instances, truncated, followed; then the
    distinct sequences of complete paths."""
    inner, params = _inner(database, journey, date_from, date_to, channel, split)
    per_status = ", ".join(
        f"countIf(status = '{st}'), countIf(status = '{st}' AND path_truncated = 1), "
        f"countIf(status = '{st}' AND followed)" for st in STATUSES)  # a fixed list
    sql = (f"SELECT {per_status},\n    uniqExactIf(seq, path_truncated = 0)\n"
           f"FROM (\n{inner}\n)")
    return sql, params


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, limit: int = 20,
) -> tuple[list[SequenceRow], SequencesSummary, list[StatusSummary]]:
    kw: dict[str, Any] = {"date_from": date_from, "date_to": date_to, "channel": channel}

    def query(split: _settled.Split) -> tuple[list[Any], list[Any]]:
        return (wh.query(*build(wh.database, journey, limit=limit, split=split, **kw)),
                wh.query(*build_summary(wh.database, journey, split=split, **kw)))

    top, summary_rows = _settled.consistent(wh, date_from, date_to, query)
    *counts, distinct = (int(x) for x in summary_rows[0])
    statuses = []
    for i, status in enumerate(STATUSES):
        n, truncated, followed = counts[3 * i: 3 * i + 3]
        statuses.append(StatusSummary(status, n, truncated, followed,
                                      j.ratio(followed, n - truncated)))
    n = sum(s.instances for s in statuses)
    truncated = sum(s.truncated for s in statuses)
    followed = sum(s.followed for s in statuses)
    complete = n - truncated
    rows = [SequenceRow(tuple(str(x) for x in seq), bool(f), int(c), int(cv), int(ab),
                        int(op), j.ratio(int(c), complete)) for seq, f, c, cv, ab, op in top]
    summary = SequencesSummary(n, truncated, followed, j.ratio(followed, complete),
                               distinct, complete - sum(r.instances for r in rows),
                               distinct - len(rows))
    return rows, summary, statuses


def to_frame(rows: list[SequenceRow], summary: SequencesSummary) -> pd.DataFrame:
    """CSV: sequence as 'a > b > c', plus a final '(other)' row when anything is unlisted."""
    cols = ["sequence", "designed", "instances", "converted", "abandoned", "open", "share"]
    data: list[tuple[Any, ...]] = [(" > ".join(r.sequence), *r[1:]) for r in rows]
    if summary.other_instances:
        complete = summary.instances - summary.truncated
        data.append(("(other)", None, summary.other_instances, None, None, None,
                     j.ratio(summary.other_instances, complete)))
    return pd.DataFrame(data, columns=cols).astype(
        {"converted": "Int64", "abandoned": "Int64", "open": "Int64"})  # null on (other)
