"""The product-manager reports, part 2: drop-off drivers, designed vs actual order
(sequences, non-step types) and the scorecard, on BOTH engines, against hand-stated
figures (pm_report_support) and the reference instances. Part 1: test_pm_reports.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from journeys.definitions import load_definitions
from journeys.errors import InvalidQuery
from tests.integration.journey_report_support import (
    DAY1,
    DAY3,
    entry_context,
)
from tests.integration.pm_report_support import (
    DAY,
    WEEK_END,
    Loaded,
    hand_data,
    reference_data,
)
from tests.reference.journeys_ref import Instance
from warehouse.backend import Warehouse
from warehouse.queries import (
    abandonment,
    dropoff_drivers,
    funnel,
    non_step_types,
    scorecard,
    sequences,
    time_to_convert,
)
from warehouse.queries._stats import two_proportion_p
from warehouse.writers_journeys import flatten_context

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


# --- drop-off drivers -------------------------------------------------------------------

def test_dropoff_drivers_by_hand(hand: Warehouse) -> None:
    rows, s = dropoff_drivers.run(hand, PURCHASE, step="product_view", **HAND)
    assert (s.dropped, s.went_on, s.drop_rate) == (1, 6, 1 / 7)  # D dropped; F, open, went on
    only_d = two_proportion_p(1, 1, 0, 6)
    assert [(r.feature, r.value, r.dropped_with, r.went_on_with, r.lift) for r in rows] == [
        ("context.device", "ios", 1, 0, 7.0), ("entry_channel", "email", 1, 0, 7.0),
        ("last_channel", "email", 1, 0, 7.0), ("context.country", "FR", 1, 1, 3.5)]
    assert [r.p_value for r in rows] == [only_d] * 3 + [two_proportion_p(1, 2, 0, 5)]
    # entry and last channel web, app, email; country DE, FR; device ios; detour off_path
    assert s.features_tested == 10 and s.over_represented == 4
    cart, s = dropoff_drivers.run(hand, PURCHASE, step="cart", top=100, **HAND)
    assert (s.dropped, s.went_on) == (1, 3)  # C; A, B, E
    # last channel at cart: C web (dropped); A web, B app (the event before the jump); E's
    # capped path does not show it: left out. Over-represented (population rate 1/4): DE
    # (C of A, C), last web (C of A, C), entry web (C of A, C, E)
    assert [(r.feature, r.value, r.dropped_with, r.went_on_with, r.p_value) for r in cart] == [
        ("context.country", "DE", 1, 1, two_proportion_p(1, 2, 0, 2)),
        ("last_channel", "web", 1, 1, two_proportion_p(1, 2, 0, 2)),
        ("entry_channel", "web", 1, 2, two_proportion_p(1, 3, 0, 1))]
    assert s.features_tested == 6  # entry web/app, last web/app, DE, FR
    with pytest.raises(InvalidQuery, match="is the goal"):
        dropoff_drivers.run(hand, PURCHASE, step="purchase", **HAND)
    with pytest.raises(InvalidQuery, match="is not a step"):
        dropoff_drivers.run(hand, PURCHASE, step="nope", **HAND)


def _features(d: Any, i: Instance, k: int) -> set[tuple[str, str]]:
    out = {("entry_channel", i.path[0].channel)}
    if i.furthest > k:
        nxt = next(n for n, e in enumerate(i.path) if d.step_index(e.type) > k)
        out.add(("last_channel", i.path[nxt - 1].channel))
    else:
        out.add(("last_channel", i.path[-1].channel))
    keys, values = flatten_context(entry_context(i))
    out |= {(f"context.{key}", v) for key, v in zip(keys, values, strict=True)}
    return out | {("detour", x.kind) for x in i.detours if x.step == d.steps[k]}


@pytest.mark.parametrize("step", ["product_view", "add_to_cart", "payment_details"])
def test_dropoff_drivers_equal_the_reference(data: Loaded, step: str) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    k = d.steps.index(step)
    pop = [i for i in _purchase(instances)
           if i.furthest > k or (i.furthest == k and i.status == "abandoned")]
    dropped = [i for i in pop if i.furthest == k]
    counts: dict[tuple[str, str], list[int]] = {}
    for i in pop:
        for f in _features(d, i, k):
            counts.setdefault(f, [0, 0])[i.furthest > k] += 1
    rows, s = dropoff_drivers.run(wh, d, step=step, top=100, **RANGE)
    assert (s.dropped, s.went_on, s.features_tested) == (len(dropped), len(pop) - len(dropped),
                                                         len(counts))
    overall = len(dropped) / len(pop)
    expected = {f for f, (dw, gw) in counts.items() if dw / (dw + gw) > overall}
    assert len(rows) == min(100, len(expected)) and {(r.feature, r.value) for r in rows} <= expected
    for r in rows:
        assert [r.dropped_with, r.went_on_with] == counts[(r.feature, r.value)]
    ps = [r.p_value for r in rows]
    assert ps == sorted(ps)


# --- designed vs actual -----------------------------------------------------------------

def test_sequences_by_hand(hand: Warehouse) -> None:
    rows, s, by_status = sequences.run(hand, PURCHASE, limit=1000, **HAND)
    pv, atc, cart = "product_view", "add_to_cart", "cart"
    assert [(r.sequence, r.designed, r.instances, r.converted, r.abandoned, r.open)
            for r in rows] == [
        ((pv,), True, 1, 0, 1, 0),  # D
        ((pv, atc), True, 1, 0, 0, 1),  # F: pv twice in a row is one
        ((pv, atc, cart), True, 1, 0, 1, 0),  # C: support_chat is not a step
        (tuple(PURCHASE.steps), True, 1, 1, 0, 0),  # A
        ((pv, atc, "payment_details", "purchase"), False, 1, 1, 0, 0),  # B jumped
        ((pv, atc, pv, atc), False, 1, 0, 1, 0)]  # I went back
    assert s == (7, 1, 4, 4 / 6, 6, 0, 0)  # E's capped path: truncated, left out
    assert [tuple(x) for x in by_status] == [("open", 1, 0, 1, 1.0),
                                             ("converted", 3, 1, 1, 0.5),
                                             ("abandoned", 3, 0, 2, 2 / 3)]
    top, s, _ = sequences.run(hand, PURCHASE, limit=2, **HAND)
    assert (len(top), s.other_instances, s.other_sequences) == (2, 4, 4)
    assert sequences.to_frame(top, s).instances.sum() == 6


def test_non_step_types_by_hand(hand: Warehouse) -> None:
    rows, s = non_step_types.run(hand, PURCHASE, **HAND)
    assert s == (7, 3, 3, 3)
    assert [(r.type, r.in_off_path, r.events, r.instances, r.converted_with,
             r.abandoned_with, [tuple(p) for p in r.positions]) for r in rows] == [
        ("error_page", True, 1, 1, 1, 0, [("shipping_details", 1, 1)]),  # A, after ship
        ("newsletter_open", False, 1, 1, 0, 0, [("add_to_cart", 1, 1)]),  # F: not listed
        ("support_chat", True, 1, 1, 0, 1, [("product_view", 1, 1)])]  # C
    assert rows[0].converted_share == 1 / 3 and rows[2].abandoned_share == 1 / 3


def _sequence(d: Any, i: Instance) -> tuple[str, ...]:
    out: list[str] = []
    for e in i.path:
        if e.type in d.steps and (not out or out[-1] != e.type):
            out.append(e.type)
    return tuple(out)


def test_sequences_equal_the_reference(data: Loaded) -> None:
    wh, defs, instances = data
    d = defs.get("purchase")
    mine = _purchase(instances)
    seqs = Counter(_sequence(d, i) for i in mine)
    followed = sum(seq == tuple(d.steps[: len(seq)]) for seq in
                   (_sequence(d, i) for i in mine))
    rows, s, _ = sequences.run(wh, d, limit=5, **RANGE)
    ranked = sorted(seqs.items(), key=lambda kv: (-kv[1], " > ".join(kv[0])))[:5]
    assert [(r.sequence, r.instances) for r in rows] == ranked
    assert (s.instances, s.truncated, s.followed, s.distinct_sequences) == (
        len(mine), 0, followed, len(seqs))


def test_non_step_types_equal_the_reference(data: Loaded) -> None:
    """The generated journeys hold step events only, so read them with a definition that
    leaves two of the steps out: their events are then the non-step types."""
    wh, defs, instances = data
    full = defs.get("purchase")
    d = full.model_copy(update={"steps": tuple(s for s in full.steps
                                               if s not in ("add_to_cart", "shipping_details"))})
    events: Counter[tuple[str, str]] = Counter()
    holders: dict[str, set[str]] = {}
    for i in _purchase(instances):
        furthest = 0
        for e in i.path:
            k = d.step_index(e.type)
            if k < 0:
                events[(e.type, d.steps[furthest])] += 1
                holders.setdefault(e.type, set()).add(i.instance_id)
            furthest = max(furthest, k)
    rows, s = non_step_types.run(wh, d, limit=1000, **RANGE)
    assert s.types_found == len(holders) == 2
    for r in rows:
        assert r.instances == len(holders[r.type])
        assert {(r.type, p.after_step): p.events for p in r.positions} == {
            k: n for k, n in events.items() if k[0] == r.type}
    assert [r.instances for r in rows] == sorted((r.instances for r in rows), reverse=True)


# --- scorecard --------------------------------------------------------------------------

def test_scorecard_by_hand(hand: Warehouse) -> None:
    defs = load_definitions()
    rows, before = scorecard.run(hand, list(defs.journeys), **HAND)
    assert before == (date(2024, 2, 26), date(2024, 3, 3))
    (p, pc), (o, oc) = rows
    # worst step: one abandoned each at product_view (D), add_to_cart (I), cart (C): earliest
    assert p[:13] == ("purchase", PURCHASE.version, 7, 3, 3, 1, 3 / 7, 3 / 7, 3600.0,
                      "product_view", 1, 1 / 7, 2)
    # journey value: converted A 120 + B 80.5 (E has none), abandoned C 45 + I 30 (D has
    # none); F is open: in neither. Before: G 50 converted, H abandoned without a value
    assert (p.value_converted, p.value_abandoned, p.converted_with_value,
            p.abandoned_with_value) == (200.5, 75.0, 2, 2)
    assert pc["value_converted"] == (50.0, 150.5, 3.01, None)
    assert pc["value_abandoned"] == (None, None, None, None)
    assert pc is not None and pc["opened"] == (2, 5, 2.5, None)
    assert pc["median_seconds_to_convert"] == (300.0, 3300.0, 11.0, None)  # G: 5 minutes
    assert pc["alerts_fired"] == (1, 1, 1.0, None)  # a1, a2 now (a3 recovered); a0 before
    assert pc["conversion_rate"].p_value == pytest.approx(two_proportion_p(3, 7, 1, 2))
    assert o == ("onboarding", defs.get("onboarding").version, 0, 0, 0, 0, None, None, None,
                 None, 0, None, 1, None, None, 0, 0)
    assert oc is not None and oc["conversion_rate"] == (None, None, None, None)
    web, _ = scorecard.run(hand, [PURCHASE], channel="web", **HAND)
    assert (web[0][0].opened, web[0][0].alerts_fired) == (5, 1)  # A, C, E, F, I; a2
    first, none = scorecard.run(hand, [PURCHASE], date_from=date(1970, 1, 1),
                                date_to=date(1970, 1, 2))
    assert none is None and first[0][1] is None


def test_scorecard_equals_the_reports(data: Loaded) -> None:
    wh, defs, _ = data
    rows, _ = scorecard.run(wh, list(defs.journeys), **RANGE)
    for (s, _c), d in zip(rows, defs.journeys, strict=True):
        _, t = funnel.run(wh, d, **RANGE)
        assert (s.opened, s.converted, s.abandoned, s.open) == (t.opened, t.converted,
                                                                t.abandoned, t.open)
        assert s.median_seconds_to_convert == time_to_convert.end_to_end(wh, d, **RANGE).p50_seconds
        ab, _ = abandonment.run(wh, d, **RANGE)
        most = max((r.abandoned for r in ab), default=0)
        assert s.worst_step_abandoned == most
        assert s.worst_step == next((r.step for r in ab if r.abandoned == most), None)
