"""Journey reports over BOTH engines equal pandas computations from the reference
instances (tests/reference/journeys_ref.py), after a replayed, versioned write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from journeys.definitions import Definitions
from journeys.errors import InvalidQuery
from tests.integration.journey_report_support import (
    DAY1,
    DAY3,
    frame,
    kept_detours,
    loaded,
    open_warehouse,
)
from tests.reference.journeys_ref import Instance
from tests.reference.journeys_ref import funnel as ref_funnel
from warehouse import compaction
from warehouse.backend import Warehouse
from warehouse.queries import _settled, abandonment, customer_journeys, detours, funnel, paths
from warehouse.queries._journeys import dim_columns
from warehouse.tables import JOURNEY_INSTANCES

Loaded = tuple[Warehouse, Definitions, list[Instance]]
RANGE = {"date_from": DAY1, "date_to": DAY3}
_COUNT = iter(range(1_000_000))


@pytest.fixture(scope="module", params=["server", "chdb", "server-compacted", "chdb-compacted"])
def data(request: pytest.FixtureRequest, run_id: str) -> Iterator[Loaded]:
    """The replayed reference data; `-compacted`: merged into one part per month, so the
    reports take the no-FINAL path (warehouse.queries._settled) and must agree."""
    database = f"jr_{run_id}_{next(_COUNT)}"
    backend, _, compacted = request.param.partition("-")
    for wh, defs, instances in loaded(open_warehouse(request, backend, database)):
        if compacted:
            compaction.compact(wh)
        assert _settled.split_months(wh, DAY1, DAY3)[0].settled == ((202401,) if compacted else ())
        yield wh, defs, instances


def _cohort(df: pd.DataFrame, journey: str, channel: str | None = None) -> pd.DataFrame:
    df = df[df.journey == journey]
    return df if channel is None else df[df.channel == channel]


def _groups(df: pd.DataFrame, dims: list[str]) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """Groups like the reports': a missing context value is its own group (None)."""
    if not dims:
        yield {}, df
        return
    for key, g in df.groupby(dims, dropna=False):
        yield {d: _plain(v) for d, v in zip(dims, key, strict=True)}, g


def _plain(v: Any) -> Any:
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return None if pd.isna(v) else v


def _dims(row: Any, names: list[str]) -> tuple[Any, ...]:
    return tuple(dim_columns(row, names).values())


def test_replays_do_not_double_count(data: Loaded) -> None:
    wh, _, instances = data
    table = f"{wh.database}.{JOURNEY_INSTANCES.name}"
    assert wh.query(f"SELECT count() FROM {table} FINAL WHERE deleted = 0")[0][0] == len(instances)
    assert wh.query(f"SELECT count() FROM {table} FINAL WHERE deleted = 1")[0][0] == 1
    assert wh.query(f"SELECT count() FROM {table}")[0][0] >= len(instances)


@pytest.mark.parametrize("breakdown", [None, ["channel"], ["day"], ["hour", "channel"],
                                       ["context.country"], ["context.utm.source", "day"]])
@pytest.mark.parametrize("journey", ["purchase", "onboarding"])
def test_funnel(data: Loaded, journey: str, breakdown: list[str] | None) -> None:
    wh, defs, instances = data
    d = defs.get(journey)
    rows, totals = funnel.run(wh, d, breakdown=breakdown, **RANGE)
    df = _cohort(frame(defs, instances), journey)
    expected = []
    for key, g in _groups(df, breakdown or []):
        for i, step in enumerate(d.steps):
            reached = g[g.furthest >= i]
            expected.append((tuple(key.values()), step, len(reached),
                             int((reached.status == "converted").sum()),
                             int(((g.status == "abandoned") & (g.furthest == i)).sum())))
    got = [(_dims(r, breakdown or []), r.step, r.instances, r.converted,
            r.dropped_here) for r in rows]
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    assert totals.opened == len(df)
    assert totals.converted == int((df.status == "converted").sum())
    assert totals.abandoned == int((df.status == "abandoned").sum())
    if breakdown is None:
        assert {r.step: r.instances for r in rows} == ref_funnel(d, instances)


def test_funnel_channel_filter(data: Loaded) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    df = _cohort(frame(defs, instances), "purchase", "app")
    rows, totals = funnel.run(wh, d, channel="app", **RANGE)
    assert [r.instances for r in rows] == [int((df.furthest >= i).sum())
                                           for i in range(len(d.steps))]
    assert totals.conversion_rate == pytest.approx((df.status == "converted").mean())
    rows, totals = funnel.run(wh, d, date_from=DAY3, date_to=DAY3)
    day3 = _cohort(frame(defs, instances), "purchase")
    assert totals.opened == int((day3.day == DAY3).sum())


@pytest.mark.parametrize("breakdown", [None, ["channel"], ["step", "hour"], ["day", "step"],
                                       ["context.country", "step"], ["context.device"]])
def test_abandonment(data: Loaded, breakdown: list[str] | None) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    rows, totals = abandonment.run(wh, d, breakdown=breakdown, **RANGE)
    df = _cohort(frame(defs, instances), "purchase").rename(columns={"dropped_at": "step"})
    ab = df[df.status == "abandoned"]
    dims = breakdown or ["step"]
    expected = [(tuple(k.values()), len(g)) for k, g in _groups(ab, dims)]
    assert sorted(((_dims(r, dims), r.abandoned) for r in rows), key=repr) == sorted(
        expected, key=repr)
    assert totals == (len(df), len(ab), int((df.status == "converted").sum()),
                      int((df.status == "open").sum()), len(ab) / len(df))
    if dims == ["step"]:  # steps come in definition order
        assert [r.step for r in rows] == sorted((r.step for r in rows), key=d.steps.index)


@pytest.mark.parametrize("breakdown", [None, ["detour_channel"], ["step", "channel"],
                                       ["context.country"]])
def test_detours(data: Loaded, breakdown: list[str] | None) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    rows, shares = detours.run(wh, d, breakdown=breakdown, **RANGE)
    df = _cohort(frame(defs, instances), "purchase")
    ex = df.explode("detours").dropna(subset=["detours"])
    ex[["kind", "step", "detour_channel"]] = pd.DataFrame(ex.detours.tolist(), index=ex.index)
    dims = ["kind", *(breakdown or ["step"])]
    expected = sorted(((tuple(k.values()), len(g), g.instance_id.nunique())
                       for k, g in _groups(ex, dims)), key=repr)
    got = sorted((((r.kind, *_dims(r, dims[1:])), r.detours, r.instances) for r in rows),
                 key=repr)
    assert got == expected and got
    ab, cv = df[df.status == "abandoned"], df[df.status == "converted"]
    for s in shares:
        with_kind = int(ab.kinds.map(lambda ks, k=s.kind: k in ks).sum())
        assert (s.abandoned, s.abandoned_with) == (len(ab), with_kind)
        assert s.converted_with == int(cv.kinds.map(lambda ks, k=s.kind: k in ks).sum())


@pytest.mark.parametrize(("steps_only", "limit"), [(True, 5), (False, 3), (True, 1000)])
def test_paths(data: Loaded, steps_only: bool, limit: int) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    rows, summary = paths.run(wh, d, steps_only=steps_only, limit=limit, **RANGE)
    df = _cohort(frame(defs, instances), "purchase")
    ab = df[df.status == "abandoned"]
    col = "steps_path" if steps_only else "full_path"
    counts = ab.groupby([col, "dropped_at"]).size()
    ranked = sorted(((-n, ",".join(p), dr, p) for (p, dr), n in counts.items()))
    expected = [(p, dr, -n) for n, _, dr, p in ranked[:limit]]
    assert [(r.path, r.dropped_at, r.instances) for r in rows] == expected
    assert summary.abandoned == len(ab) and summary.distinct_paths == len(counts)
    assert summary.other_instances + sum(r.instances for r in rows) == len(ab)
    assert summary.other_paths == max(len(counts) - limit, 0)
    csv = paths.to_frame(rows, summary)
    assert int(csv.instances.sum()) == len(ab)


def test_paths_dropped_at_filter(data: Loaded) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    rows, summary = paths.run(wh, d, dropped_at="cart", **RANGE)
    ab = _cohort(frame(defs, instances), "purchase")
    assert summary.abandoned == int(((ab.status == "abandoned") & (ab.dropped_at == "cart")).sum())
    assert {r.dropped_at for r in rows} <= {"cart"}
    with pytest.raises(InvalidQuery):
        paths.run(wh, d, dropped_at="nope", **RANGE)


def test_customer_journeys(data: Loaded) -> None:
    wh, _, instances = data
    by_customer: dict[str, list[Instance]] = {}
    for i in instances:
        by_customer.setdefault(i.customer, []).append(i)
    customer, mine = max(by_customer.items(), key=lambda kv: (len(kv[1]), kv[0]))
    mine = sorted(mine, key=lambda i: (-i.opened_at, i.journey, i.instance_id))
    rows, total = customer_journeys.run(wh, customer, limit=1)
    assert total == len(mine) and [r.instance_id for r in rows] == [mine[0].instance_id]
    rows, _ = customer_journeys.run(wh, customer, limit=500)
    assert [r.instance_id for r in rows] == [i.instance_id for i in mine]
    for r, i in zip(rows, mine, strict=True):
        assert r.path_types == [e.type for e in i.path] and r.status == i.status
        assert r.path_times == [e.t for e in i.path]
        assert r.detour_kinds == [x.kind for x in kept_detours(i)]
        assert (r.events, r.path_truncated) == (len(i.path), False)
    assert customer_journeys.run(wh, "nobody-at-all") == ([], 0)


@pytest.mark.parametrize("module", [funnel, abandonment, detours])
def test_bad_breakdown(data: Loaded, module: Any) -> None:
    wh, defs, _ = data
    with pytest.raises(InvalidQuery, match="breakdown"):
        module.run(wh, defs.get("purchase"), breakdown=["country; DROP TABLE x"], **RANGE)
