"""The product-manager reports, part 1: time to convert, trend and the comparison with
the previous period, on BOTH engines: against the hand-made instances of
pm_report_support (figures stated by hand), and against the reference instances
(tests/reference/journeys_ref.py) computed independently here. Part 2:
test_pm_designed.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pandas as pd
import pytest

from journeys.definitions import Definitions, load_definitions
from journeys.errors import InvalidQuery
from tests.integration.journey_report_support import (
    DAY1,
    DAY3,
    frame,
)
from tests.integration.pm_report_support import (
    DAY,
    PREVIOUS_DAY,
    WEEK_END,
    Loaded,
    hand_data,
    reference_data,
)
from tests.reference.journeys_ref import Instance
from warehouse.backend import Warehouse
from warehouse.queries import (
    abandonment,
    compare,
    detours,
    funnel,
    time_to_convert,
    trend,
)
from warehouse.queries._stats import exact_quantile, previous_period, two_proportion_p

RANGE = {"date_from": DAY1, "date_to": DAY3}
HAND = {"date_from": DAY, "date_to": WEEK_END}
PURCHASE = load_definitions().get("purchase")


@pytest.fixture(scope="module", params=["server", "chdb", "server-compacted", "chdb-compacted"])
def data(request: pytest.FixtureRequest, run_id: str) -> Iterator[Loaded]:
    """The replayed reference data; `-compacted` takes the no-FINAL read path."""
    yield from reference_data(request, run_id)


@pytest.fixture(scope="module", params=["server", "chdb"])
def hand(request: pytest.FixtureRequest, run_id: str) -> Iterator[Warehouse]:
    yield from hand_data(request, run_id)


def _purchase(instances: list[Instance], channel: str | None = None) -> list[Instance]:
    return [i for i in instances if i.journey == "purchase"
            and (channel is None or i.path[0].channel == channel)]


# --- time to convert -------------------------------------------------------------------

def _ttc(rows: list[time_to_convert.TimeRow]) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {(r.segment, r.from_step): (r.instances, r.measured, r.same_event, r.p50_seconds,
                                       r.p90_seconds, r.mean_seconds, r.histogram) for r in rows}


def test_time_to_convert_by_hand(hand: Warehouse) -> None:
    got = _ttc(time_to_convert.run(hand, PURCHASE, **HAND))
    h = dict.fromkeys(range(9), 0)

    def hist(**counts: int) -> tuple[int, ...]:
        return tuple({**h, **{int(k[1:]): v for k, v in counts.items()}}.values())

    # pv -> atc: A 1m, B 3m, C 2m, E 1m, I 1m, F 7m (F: pv at 0 and 1, first reach counts)
    assert got[("transition", "product_view")] == (
        6, 6, 0, 120.0, 420.0, 900 / 6, hist(b1=5, b2=1))
    # atc -> cart: A 1m, B 1m (the pay event reaches cart), C 28m; E capped: unmeasured
    assert got[("transition", "add_to_cart")] == (4, 3, 0, 60.0, 1680.0, 600.0,
                                                    hist(b1=2, b3=1))
    # cart -> ship: A 3m, B 0 (one event reached both); E unmeasured
    assert got[("transition", "cart")] == (3, 2, 1, 180.0, 180.0, 90.0, hist(b0=1, b1=1))
    assert got[("transition", "shipping_details")] == (3, 2, 1, 300.0, 300.0, 150.0,
                                                         hist(b0=1, b2=1))
    assert got[("transition", "payment_details")] == (3, 2, 0, 3360.0, 3360.0, 1980.0,
                                                        hist(b2=1, b3=1))
    # end to end: A 20m, B 60m, E 120m (exact though E's path is capped)
    assert got[("end_to_end", "product_view")] == (3, 3, None, 3600.0, 7200.0, 4000.0,
                                                    hist(b3=1, b4=2))


def _reference_durations(instances: list[Instance], tr: int) -> list[float]:
    return [(i.reached[tr + 1][0] - i.reached[tr][0]) / 1000 for i in instances
            if i.furthest >= tr + 1]


@pytest.mark.parametrize("channel", [None, "web"])
def test_time_to_convert_equals_the_reference(data: Loaded, channel: str | None) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    mine = _purchase(instances, channel)
    rows = time_to_convert.run(wh, d, channel=channel, **RANGE)
    assert [(r.segment, r.from_step, r.to_step) for r in rows] == [
        *(("transition", a, b) for a, b in zip(d.steps, d.steps[1:], strict=False)),
        ("end_to_end", d.steps[0], d.steps[-1])]
    for tr, r in enumerate(rows[:-1]):
        ds = _reference_durations(mine, tr)
        assert (r.instances, r.measured) == (len(ds), len(ds))
        assert r.p50_seconds == exact_quantile(ds, 0.5)
        assert r.p90_seconds == exact_quantile(ds, 0.9)
        assert r.mean_seconds == (pytest.approx(sum(ds) / len(ds)) if ds else None)
        assert sum(r.histogram) == len(ds)
    converted = [(i.closed_at - i.opened_at) / 1000 for i in mine if i.status == "converted"]
    end = rows[-1]
    assert end.instances == len(converted) and end.p50_seconds == exact_quantile(converted, 0.5)
    assert end.p90_seconds == exact_quantile(converted, 0.9)


def test_time_to_convert_breakdown(data: Loaded) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    rows = time_to_convert.run(wh, d, breakdown=["channel"], **RANGE)
    for channel in {r.channel for r in rows}:
        alone = time_to_convert.run(wh, d, channel=channel, **RANGE)
        assert [r[4:] for r in rows if r.channel == channel] == [r[4:] for r in alone]
    by_country = time_to_convert.run(wh, d, breakdown=["context.country"], **RANGE)
    assert sum(r.instances for r in by_country if r.segment == "end_to_end") == sum(
        i.status == "converted" for i in _purchase(instances))


# --- trend ------------------------------------------------------------------------------

def test_trend_by_hand(hand: Warehouse) -> None:
    weeks = trend.run(hand, PURCHASE, date_from=PREVIOUS_DAY - timedelta(days=1),
                      date_to=WEEK_END, interval="week")
    assert [(r.period, r.first_day, r.last_day, r.partial, r.opened, r.converted, r.abandoned,
             r.open) for r in weeks] == [
        (date(2024, 2, 26), date(2024, 2, 26), date(2024, 3, 3), False, 2, 1, 1, 0),
        (DAY, DAY, WEEK_END, False, 7, 3, 3, 1)]
    assert (weeks[1].conversion_rate, weeks[1].abandonment_rate) == (3 / 7, 3 / 7)
    cut = trend.run(hand, PURCHASE, date_from=date(2024, 2, 28), date_to=DAY, interval="week")
    assert [(r.first_day, r.last_day, r.partial, r.opened) for r in cut] == [
        (date(2024, 2, 28), date(2024, 3, 3), True, 0), (DAY, DAY, True, 7)]
    assert cut[0].conversion_rate is None
    days = trend.run(hand, PURCHASE, date_from=DAY - timedelta(days=1),
                     date_to=DAY + timedelta(days=1), breakdown=["channel"])
    assert [(r.channel, r.period, r.opened) for r in days if r.opened] == [
        ("app", DAY, 1), ("email", DAY, 1), ("web", DAY, 5)]
    assert len(days) == 3 * 3  # every day for every channel, zeros included


@pytest.mark.parametrize("breakdown", [None, ["channel"], ["context.country"]])
def test_trend_equals_the_reference(data: Loaded, breakdown: list[str] | None) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    df = _cohort_frame(defs, instances)
    for interval in ("day", "week"):
        rows = trend.run(wh, d, breakdown=breakdown, interval=interval, **RANGE)
        key = (breakdown or [None])[0]
        got = {(_dim(r, key), r.period): (r.opened, r.converted, r.abandoned, r.open)
               for r in rows if r.opened}
        df["period"] = df.day if interval == "day" else df.day.map(
            lambda x: x - timedelta(days=x.weekday()))
        expected = {}
        for (value, period), g in df.groupby([key or "journey", "period"], dropna=False):
            expected[(None if key is None or pd.isna(value) else value, period)] = (
                len(g), int((g.status == "converted").sum()),
                int((g.status == "abandoned").sum()), int((g.status == "open").sum()))
        assert got == expected


def _dim(row: Any, name: str | None) -> Any:
    if name is None:
        return None
    return (row.context or {}).get(name[8:]) if name.startswith("context.") else getattr(
        row, name)


def _cohort_frame(defs: Definitions, instances: list[Instance]) -> pd.DataFrame:
    df = frame(defs, instances)
    return df[df.journey == "purchase"].copy()


# --- compare with the previous period ---------------------------------------------------

def test_compare_by_hand(hand: Warehouse) -> None:
    lo, hi = previous_period(DAY, WEEK_END)
    assert (lo, hi) == (date(2024, 2, 26), date(2024, 3, 3))
    cur = funnel.run(hand, PURCHASE, **HAND)
    prev = funnel.run(hand, PURCHASE, date_from=lo, date_to=hi)
    rows, totals = compare.funnel(PURCHASE, None, cur, prev)
    assert totals["opened"] == (2, 5, 2.5, None)
    assert totals["conversion_rate"][:3] == (0.5, pytest.approx(3 / 7 - 0.5),
                                             pytest.approx((3 / 7 - 0.5) / 0.5))
    assert totals["conversion_rate"].p_value == pytest.approx(0.8577144806607082)
    cart = rows[2][1]  # G reached cart before, A, B, C, E now
    assert (rows[2][0].step, rows[2][0].instances, cart["instances"].previous) == ("cart", 4, 1)
    assert cart["share_of_opened"].p_value == pytest.approx(two_proportion_p(4, 7, 1, 2))
    breakdown = ["step", "channel"]
    ab_rows, ab_totals = compare.abandonment(
        PURCHASE, breakdown, abandonment.run(hand, PURCHASE, breakdown=breakdown, **HAND),
        abandonment.run(hand, PURCHASE, breakdown=breakdown, date_from=lo, date_to=hi))
    assert [(r.step, r.channel, r.abandoned, c["abandoned"].previous) for r, c in ab_rows] == [
        ("product_view", "email", 1, 0), ("product_view", "web", 0, 1),  # H: before only
        ("add_to_cart", "web", 1, 0), ("cart", "web", 1, 0)]
    gone = ab_rows[1]
    assert gone[0].share_of_abandoned is None and gone[1]["share_of_abandoned"].previous == 1.0
    assert ab_totals["abandonment_rate"][:2] == (0.5, pytest.approx(3 / 7 - 0.5))


def test_compare_detours_by_hand(hand: Warehouse) -> None:
    lo, hi = previous_period(DAY, WEEK_END)
    rows, shares = compare.detours(
        PURCHASE, ["step"], detours.run(hand, PURCHASE, **HAND),
        detours.run(hand, PURCHASE, date_from=lo, date_to=hi))
    assert [(r.kind, r.step, r.detours, c["detours"].change) for r, c in rows] == [
        ("backtrack", "add_to_cart", 1, 1), ("loop", "add_to_cart", 1, 1),
        ("off_path", "product_view", 1, 1), ("off_path", "shipping_details", 1, 1)]
    off = {s.kind: c for s, c in shares}["off_path"]
    # abandoned now C, D, I (C has one), before H (none); converted now A, B, E (A has one)
    assert off["abandoned_share"][:2] == (0.0, pytest.approx(1 / 3))
    assert off["abandoned_share"].p_value == pytest.approx(two_proportion_p(1, 3, 0, 1))
    assert off["converted_with"] == (0, 1, None, None)


@pytest.mark.parametrize("breakdown", [None, ["channel"], ["context.country"]])
def test_compare_reference_previous_day(data: Loaded, breakdown: list[str] | None) -> None:
    """DAY3's reports against DAY1's: every previous figure is DAY1's own report."""
    wh, defs, _ = data
    d = defs.get("purchase")
    now, before = {"date_from": DAY3, "date_to": DAY3}, {"date_from": DAY1, "date_to": DAY1}
    cur, prev = (funnel.run(wh, d, breakdown=breakdown, **kw) for kw in (now, before))
    rows, totals = compare.funnel(d, breakdown, cur, prev)
    assert totals["converted"].previous == prev[1].converted
    then = {(r.channel, str(r.context), r.step): r.instances for r in prev[0]}
    assert len(rows) >= len(cur[0]) and len(rows) >= len(prev[0])
    for r, c in rows:
        assert c["instances"].previous == then.get((r.channel, str(r.context), r.step), 0)
        assert c["instances"].change == r.instances - c["instances"].previous
    with pytest.raises(InvalidQuery, match="cannot be combined"):
        compare.check_breakdown(["step", "day"])
