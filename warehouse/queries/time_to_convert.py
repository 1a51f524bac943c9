"""Time to convert: how long instances take from one step to the next, and from opening
to conversion (p50, p90, mean and a fixed histogram), in event time.

`journey_instances` does not store when each step was reached (the stream computes it,
stream.engine.outputs.InstanceRow.reached_times, but the writer does not keep it), so
it is read off the stored path: step s is first reached by the first path event whose
step index is >= s (a jump counts every skipped step as reached at that event,
docs/semantics.md). That is exact for every path the table holds whole; a capped path
(docs/semantics.md "Capped paths") holds its first events only, and a transition whose
step was first reached after them cannot be timed: it is counted as `unmeasured`, never
guessed. End to end (opened -> converted) is closed_at - opened_at of converted
instances, exact for every instance.

Quantiles are quantileExact (warehouse.queries._stats.exact_quantile states the rule),
the same on ClickHouse 18.16 and chdb.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple

import pandas as pd

from journeys.definitions import JourneyDefinition
from warehouse.backend import Warehouse
from warehouse.queries import _journeys as j
from warehouse.queries import _paths, _settled

ALLOWED = dict(j.BASE_DIMENSIONS)
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-1m", 0, MINUTE), ("1m-5m", MINUTE, 5 * MINUTE), ("5m-15m", 5 * MINUTE, 15 * MINUTE),
    ("15m-1h", 15 * MINUTE, HOUR), ("1h-4h", HOUR, 4 * HOUR), ("4h-1d", 4 * HOUR, DAY),
    ("1d-3d", DAY, 3 * DAY), ("3d-7d", 3 * DAY, 7 * DAY), ("7d+", 7 * DAY, None),
)
"""Histogram buckets of a duration: (label, from ms inclusive, to ms exclusive)."""
TRANSITION, END_TO_END = "transition", "end_to_end"


class TimeRow(NamedTuple):
    channel: str | None
    day: date | None
    hour: datetime | None
    context: dict[str, str | None] | None
    segment: str  # transition | end_to_end
    from_step: str
    to_step: str
    instances: int  # reached to_step (end_to_end: converted)
    measured: int  # of those, with a known duration
    same_event: int | None  # transitions: both steps first reached by one event (a jump)
    p50_seconds: float | None
    p90_seconds: float | None
    mean_seconds: float | None
    histogram: tuple[int, ...]  # counts per BUCKETS, measured instances only


def _aggregate(inner: str, dims: list[j.Dim], key: str | None) -> str:
    """The outer query over per-instance (or per-transition) durations `ms`, with `ok`
    saying whether the duration is known and `same` whether one event made it."""
    buckets = ", ".join(
        f"countIf(ok AND ms >= {lo}{'' if hi is None else f' AND ms < {hi}'}) AS b{i}"
        for i, (_, lo, hi) in enumerate(BUCKETS))
    more = (key,) if key else ()
    head = "".join(f"{k}, " for k in [*(d.alias for d in dims), *more])
    lines = [
        f"SELECT {head}count() AS instances, countIf(ok) AS measured,"
        " countIf(ok AND same) AS same_event,",
        "    quantilesExactIf(0.5, 0.9)(ms, ok) AS q, avgIf(ms, ok) AS mean,",
        f"    {buckets}", f"FROM (\n{inner}\n)", j.group_by(dims, *more),
        j.order_by(dims, *more)]
    return "\n".join(line for line in lines if line)


def build(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
    split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """Per group and step tr: durations from the first event reaching step tr - 1 to the
    first reaching step tr, over instances whose furthest step is >= tr. Row tr = 0 (every
    instance has one) is no transition: it lists every group of the cohort, so a group
    that never got past the entry step still shows (with zeros)."""
    dims = j.dimensions(breakdown, ALLOWED)
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel)
    steps, step_params = _paths.steps_array(journey)
    params.update(step_params, last_step=len(journey.steps) - 1)
    aj = "ARRAY JOIN range(toUInt32(least(furthest_step, %(last_step)s) + 1)) AS tr"
    cols = j.columns(dims, "path_types", "path_times")
    inner = (
        f"SELECT {j.select_dims(dims)}tr, {_paths.reach_position('tr - 1', steps)} AS p0, "
        f"{_paths.reach_position('tr', steps)} AS p1,\n    p1 > 0 AS ok, p1 = p0 AS same, "
        "if(ok, toInt64(path_times[p1]) - toInt64(path_times[p0]), 0) AS ms\n"
        f"{_settled.source(database, where, cols, split, aj)}"
    )
    return _aggregate(inner, dims, "tr"), {**params, **j.dim_params(dims),
                                          **_settled.params(split)}


def build_end_to_end(
    database: str, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
    split: _settled.Split = _settled.FINAL_EVERYWHERE,
) -> tuple[str, dict[str, Any]]:
    """Per group: closed_at - opened_at of the converted instances."""
    dims = j.dimensions(breakdown, ALLOWED)
    where, params = j.where(journey, date_from=date_from, date_to=date_to, channel=channel,
                            extra=("status = 'converted'",))
    cols = j.columns(dims, "opened_at_ms", "closed_at_ms")
    inner = (
        f"SELECT {j.select_dims(dims)}1 AS ok, 0 AS same, "
        "toInt64(closed_at_ms) - toInt64(opened_at_ms) AS ms\n"
        f"{_settled.source(database, where, cols, split)}"
    )
    return _aggregate(inner, dims, None), {**params, **j.dim_params(dims),
                                          **_settled.params(split)}


def _seconds(ms: Any, measured: int) -> float | None:
    return float(ms) / 1000 if measured else None


def _measures(values: tuple[Any, ...]) -> tuple[int, int, int, float | None, float | None,
                                                  float | None, tuple[int, ...]]:
    n, measured, same, q, mean, *hist = values
    measured = int(measured)
    return (int(n), measured, int(same), _seconds(q[0], measured), _seconds(q[1], measured),
            _seconds(mean, measured), tuple(int(h) for h in hist))


def run(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None, breakdown: list[str] | None = None,
) -> list[TimeRow]:
    """Per group of the cohort (breakdown order): every transition in step order, then
    end to end; a transition or end to end nobody made is listed with zeros."""
    kw: dict[str, Any] = {"date_from": date_from, "date_to": date_to, "channel": channel,
                          "breakdown": breakdown}

    def query(split: _settled.Split) -> tuple[list[Any], list[Any]]:
        return (wh.query(*build(wh.database, journey, split=split, **kw)),
                wh.query(*build_end_to_end(wh.database, journey, split=split, **kw)))

    transitions, ends = _settled.consistent(wh, date_from, date_to, query)
    names = [d.name for d in j.dimensions(breakdown, ALLOWED)]
    found: dict[tuple[Any, ...], dict[int, tuple[Any, ...]]] = {}
    for r in transitions:
        key = tuple(j.dim_value(n, v) for n, v in zip(names, r[: len(names)], strict=True))
        to_step = int(r[len(names)])  # 0: the group exists; else the transition into it
        group = found.setdefault(key, {})
        if to_step > 0:
            group[to_step - 1] = _measures(tuple(r[len(names) + 1:]))
    for r in ends:
        key = tuple(j.dim_value(n, v) for n, v in zip(names, r[: len(names)], strict=True))
        found.setdefault(key, {})[-1] = _measures(tuple(r[len(names):]))
    steps = journey.steps
    empty = (0, 0, 0, None, None, None, (0,) * len(BUCKETS))
    rows: list[TimeRow] = []
    for key in sorted(found, key=lambda k: tuple(
            j.sort_key(journey, n, v) for n, v in zip(names, k, strict=True))):
        values = dict(zip(names, key, strict=True))
        head = (values.get("channel"), values.get("day"), values.get("hour"),
                j.split_context(values))
        for tr in [*range(len(steps) - 1), -1]:
            n, measured, same, p50, p90, mean, hist = found[key].get(tr, empty)
            segment, a, b = ((END_TO_END, steps[0], steps[-1]) if tr < 0
                             else (TRANSITION, steps[tr], steps[tr + 1]))
            rows.append(TimeRow(*head, segment, a, b, n, measured,
                                None if tr < 0 else same, p50, p90, mean, hist))
    return rows


def to_frame(rows: list[TimeRow], breakdown: list[str] | None) -> pd.DataFrame:
    """CSV shape: one column per requested dimension, the histogram as bucket_<label>."""
    names = breakdown or []
    measures = TimeRow._fields[4:-1]
    labels = [f"bucket_{label}" for label, _, _ in BUCKETS]
    data = [{**j.dim_columns(r, names), **{m: getattr(r, m) for m in measures},
             **dict(zip(labels, r.histogram, strict=True))} for r in rows]
    df = pd.DataFrame(data, columns=[*names, *measures, *labels])
    return df.astype({"same_event": "Int64"})  # null on end_to_end rows, yet a count


def end_to_end(
    wh: Warehouse, journey: JourneyDefinition, *, date_from: date, date_to: date,
    channel: str | None = None,
) -> TimeRow:
    """Opened -> converted over the whole cohort (no breakdown), as `run` lists it."""
    def query(split: _settled.Split) -> list[Any]:
        return wh.query(*build_end_to_end(wh.database, journey, date_from=date_from,
                                          date_to=date_to, channel=channel, split=split))

    n, measured, _, p50, p90, mean, hist = _measures(
        tuple(_settled.consistent(wh, date_from, date_to, query)[0]))
    return TimeRow(None, None, None, None, END_TO_END, journey.steps[0], journey.steps[-1], n,
                   measured, None, p50, p90, mean, hist)
