"""The product-manager reports (time to convert, trend, comparison with the previous
period, drop-off drivers, designed vs actual, scorecard) on BOTH engines: against the
hand-made instances of pm_report_support (figures stated by hand), and against the
reference instances (tests/reference/journeys_ref.py) computed independently here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from journeys.definitions import Definitions, load_definitions
from tests.integration.journey_report_support import DAY1, DAY3, loaded, open_warehouse
from tests.integration.pm_report_support import DAY, WEEK_END, hand_loaded
from tests.reference.journeys_ref import Instance
from warehouse import compaction
from warehouse.backend import Warehouse
from warehouse.queries import time_to_convert
from warehouse.queries._stats import exact_quantile

Loaded = tuple[Warehouse, Definitions, list[Instance]]
RANGE = {"date_from": DAY1, "date_to": DAY3}
HAND = {"date_from": DAY, "date_to": WEEK_END}
_COUNT = iter(range(1_000_000))
PURCHASE = load_definitions().get("purchase")


@pytest.fixture(scope="module", params=["server", "chdb", "server-compacted", "chdb-compacted"])
def data(request: pytest.FixtureRequest, run_id: str) -> Iterator[Loaded]:
    """The replayed reference data; `-compacted` takes the no-FINAL read path."""
    backend, _, compacted = request.param.partition("-")
    config = open_warehouse(request, backend, f"pm_{run_id}_{next(_COUNT)}")
    for wh, defs, instances in loaded(config):
        if compacted:
            compaction.compact(wh)
        yield wh, defs, instances


@pytest.fixture(scope="module", params=["server", "chdb"])
def hand(request: pytest.FixtureRequest, run_id: str) -> Iterator[Warehouse]:
    config = open_warehouse(request, request.param, f"pmh_{run_id}_{next(_COUNT)}")
    yield from hand_loaded(config)


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
