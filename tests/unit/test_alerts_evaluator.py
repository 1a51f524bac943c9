"""Drop-off evaluator: windows, horizon, finality, baseline, threshold, confidence, volume."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from journeys.definitions import AlertRule, JourneyDefinition
from stream.engine.alert_verdict import (
    ALL_CHANNELS,
    AlertRecord,
    alert_id,
    final_before,
    is_dropped,
    judge,
    window_start,
)
from stream.engine.dropoff import DropoffEvaluator, StepAlertState
from stream.engine.outputs import StepReached, retraction
from stream.eventtime.watermarks import NO_WATERMARK

W = 3_600_000  # 1h windows
H = 1_800_000  # 30m horizon
_ids = itertools.count()


def defn(**alert: Any) -> JourneyDefinition:
    base: dict[str, Any] = {"window": "1h", "horizon": "30m", "baseline_windows": 24,
                            "min_volume": 10, "threshold": 0.15, "confidence": 0.999}
    base.update(alert)
    return JourneyDefinition(name="j", steps=("a", "b", "c"), alert=AlertRule(**base))


def fill(ev: DropoffEvaluator, ws: int, n: int, dropped: int, channel: str = "web",
         step: int = 0) -> None:
    """n instances reach `step` inside window ws; all but `dropped` continue after 1 min."""
    for i in range(n):
        iid = f"i{next(_ids)}"
        t = ws + i * 1000
        ev.observe(StepReached("j", iid, step, t, channel))
        if i >= dropped:
            ev.observe(StepReached("j", iid, step + 1, t + 60_000, channel))


def run(ev: DropoffEvaluator, windows: list[tuple[int, int]], channel: str = "web",
        first: int = 0) -> list[AlertRecord]:
    """Fill consecutive windows with (n, dropped), finalize them all."""
    for i, (n, dropped) in enumerate(windows):
        fill(ev, (first + i) * W, n, dropped, channel)
    return ev.advance((first + len(windows)) * W + H)


def keyed(records: list[AlertRecord]) -> list[tuple[str, str, str, int]]:
    return [(r.kind, r.step, r.channel, r.window_start_ms // W) for r in records]


def test_window_boundaries_and_finality() -> None:
    assert window_start(W - 1, W) == 0
    assert window_start(W, W) == W
    assert window_start(-1, W) == -W
    rule = defn().alert
    assert final_before(W + H - 1, rule) == 0  # window [0, W) not final yet
    assert final_before(W + H, rule) == W  # final exactly at end + horizon
    assert final_before(NO_WATERMARK, rule) == NO_WATERMARK


def test_horizon_is_inclusive() -> None:
    assert not is_dropped(1000, 1000 + H, H)
    assert is_dropped(1000, 1000 + H + 1, H)
    assert is_dropped(1000, None, H)
    ev = DropoffEvaluator([defn(min_volume=1)])
    ev.observe(StepReached("j", "x", 0, W - 1, "web"))
    ev.observe(StepReached("j", "x", 1, W - 1 + H, "web"))
    ev.observe(StepReached("j", "y", 0, W - 1, "web"))
    ev.observe(StepReached("j", "y", 1, W + H, "web"))
    st = ev.states[("j", 0)]
    assert ev.advance(W + H - 1) == [] and len(st.entries) == 2  # not final: kept
    ev.advance(W + H)
    assert st.entries == {} and st.history[ALL_CHANNELS].rates == [0.5]


def test_fires_only_after_three_qualifying_windows() -> None:
    ev = DropoffEvaluator([defn()])
    # two calm windows, one tiny window (below min_volume), then an incident: no baseline
    assert run(ev, [(100, 10), (100, 10), (5, 0), (100, 90)]) == []
    # third qualifying window exists now (the incident itself did not fire): next one fires
    out = run(ev, [(100, 90)], first=4)
    assert keyed(out) == [("fired", "a", "all", 4), ("fired", "a", "web", 4)]
    r = out[0]
    assert (r.population, r.dropped, r.rate, r.baseline_windows) == (100, 90, 0.9, 3)
    assert r.baseline == pytest.approx((0.1 + 0.1 + 0.9) / 3)
    assert r.alert_id == alert_id("j", "a", "all", 4 * W)
    assert r.final_at_ms == 5 * W + H


def test_fired_windows_stay_out_of_the_baseline() -> None:
    ev = DropoffEvaluator([defn()])
    out = run(ev, [(100, 10)] * 3 + [(100, 80)] * 4)
    fired = [r for r in out if r.channel == ALL_CHANNELS]
    assert [r.window_start_ms // W for r in fired] == [3, 4, 5, 6]  # a long incident keeps alerting
    assert [r.baseline for r in fired] == pytest.approx([0.1] * 4)
    assert ev.states[("j", 0)].history[ALL_CHANNELS].rates == pytest.approx([0.1] * 3)


def test_min_volume_boundary() -> None:
    calm = [(20, 2)] * 3
    assert run(DropoffEvaluator([defn(min_volume=20)]), [*calm, (19, 19)]) == []
    out = run(DropoffEvaluator([defn(min_volume=20)]), [*calm, (20, 20)])
    assert {r.kind for r in out} == {"fired"}


def test_threshold_is_strict() -> None:
    rule = defn(threshold=0.25, min_volume=40).alert
    history = [0.25, 0.25, 0.25]
    assert not judge(rule, history, False, 40, 20).fired  # excess == threshold exactly
    v = judge(rule, history, False, 40, 21)
    assert v.fired and v.p_value < 1e-3


def test_confidence_gate() -> None:
    rule = defn(min_volume=5, threshold=0.15).alert
    v = judge(rule, [0.25] * 3, False, 5, 3)  # rate 0.6: well above threshold, yet plausible
    assert not v.fired and v.p_value == pytest.approx(0.103515625)
    assert judge(defn(min_volume=5, confidence=0.8).alert, [0.25] * 3, False, 5, 3).fired


def test_baseline_zero_and_one() -> None:
    rule = defn(min_volume=10).alert
    v = judge(rule, [0.0] * 3, False, 10, 2)
    assert v.fired and v.p_value == 0.0
    assert not judge(rule, [0.0] * 3, False, 10, 1).fired  # rate 0.1 < threshold
    assert not judge(rule, [1.0] * 3, False, 10, 10).fired


def test_channel_incident_does_not_hide_in_total() -> None:
    ev = DropoffEvaluator([defn()])
    for w in range(5):
        fill(ev, w * W, 400, 40, "web")
        fill(ev, w * W, 40, 36 if w == 4 else 4, "app")
    out = ev.advance(5 * W + H)
    assert keyed(out) == [("fired", "a", "app", 4)]


def test_recovery_notice_and_no_repeats() -> None:
    ev = DropoffEvaluator([defn()])
    out = run(ev, [(100, 10)] * 3 + [(100, 80)])
    assert keyed(out) == [("fired", "a", "all", 3), ("fired", "a", "web", 3)]
    # still high but not above threshold+baseline? 0.3 - 0.1 > 0.15: no recovery yet
    assert run(ev, [(12, 4)], first=4) == []
    rec = run(ev, [(100, 12)], first=5)
    assert keyed(rec) == [("recovered", "a", "all", 5), ("recovered", "a", "web", 5)]
    assert rec[0].resolves == out[0].alert_id
    assert ev.advance(100 * W) == []  # nothing is ever emitted twice
    assert run(ev, [(100, 10)], first=200) == []  # recovered once, not again


def test_empty_windows_are_skipped_not_zero() -> None:
    ev = DropoffEvaluator([defn()])
    run(ev, [(100, 10)] * 3)
    out = run(ev, [(100, 80)], first=50)  # 46 empty windows in between
    assert keyed(out)[0] == ("fired", "a", "all", 50)
    assert out[0].baseline == pytest.approx(0.1)


def test_late_duplicate_and_out_of_order_observations() -> None:
    ev = DropoffEvaluator([defn(min_volume=1)])
    # continuation before population, duplicates, an earlier correction of reached time
    ev.observe(StepReached("j", "x", 1, 2 * W + 10, "web"))
    ev.observe(StepReached("j", "x", 0, 2 * W + 5, "app"))
    ev.observe(StepReached("j", "x", 0, 2 * W + 5, "app"))
    ev.observe(StepReached("j", "x", 0, W + 5, "web"))  # engine learnt of an earlier event
    st = ev.states[("j", 0)]
    # [reached, channel, next_at, retracted as of, [[next_at, as_of] of merges]]
    assert st.entries["x"] == [W + 5, "web", 2 * W + 10, None, None]
    ev.advance(3 * W + H)
    assert st.history["web"].rates == [1.0] and "app" not in st.history
    assert not ev.observe(StepReached("j", "late", 0, 2 * W, "web"))  # window is final
    assert ev.late == 1 and "late" not in st.entries


def test_routing_and_goal_step() -> None:
    ev = DropoffEvaluator([defn()])
    assert ev.keys_for(StepReached("j", "x", 0, 0, "web")) == [("j", 0)]
    assert ev.keys_for(StepReached("j", "x", 1, 0, "web")) == [("j", 0), ("j", 1)]
    assert ev.keys_for(StepReached("j", "x", 2, 0, "web")) == [("j", 1)]  # goal: continuation only
    assert ev.keys_for(StepReached("other", "x", 0, 0, "web")) == []
    with pytest.raises(ValueError):
        StepAlertState.new(defn(), 2)


def test_state_survives_a_restart() -> None:
    d = defn()
    a, b = DropoffEvaluator([d]), DropoffEvaluator([d])
    run(a, [(100, 10)] * 3)
    run(b, [(100, 10)] * 3)
    fill(a, 3 * W, 100, 80)
    fill(b, 3 * W, 100, 80)
    restored = DropoffEvaluator([d])
    restored.loads(b.dumps())
    for st in b.states.values():
        assert StepAlertState.loads(st.dumps()) == st
    assert a.advance(4 * W + H) == restored.advance(4 * W + H) != []


def test_restore_for_a_table_value() -> None:
    d = defn()
    fresh = StepAlertState.restore(d, 0, None, 5 * W + H)
    assert fresh.final_before == 5 * W and fresh.entries == {}
    ev = DropoffEvaluator([d])
    run(ev, [(100, 10)] * 3)
    raw = ev.states[("j", 0)].dumps()
    assert StepAlertState.restore(d, 0, raw, 0) == ev.states[("j", 0)]
    changed = StepAlertState.restore(defn(horizon="10m"), 0, raw, 3 * W)
    assert changed.history == {} and changed.final_before == 2 * W


def test_a_channel_named_all_counts_once() -> None:
    ev = DropoffEvaluator([defn(min_volume=1)])
    fill(ev, 0, 4, 1, channel="all")
    fill(ev, 0, 4, 1, channel="web")
    ev.advance(W + H)
    hist = ev.states[("j", 0)].history
    assert hist[ALL_CHANNELS].rates == [0.25] and set(hist) == {ALL_CHANNELS, "web"}


def test_changed_definition_starts_over() -> None:
    ev = DropoffEvaluator([defn()])
    run(ev, [(100, 10)] * 3)
    other = DropoffEvaluator([defn(window="2h")])
    other.loads(ev.dumps())
    assert other.states == {}
    same = DropoffEvaluator([defn(threshold=0.3)])  # threshold only: history still valid
    same.loads(ev.dumps())
    assert set(same.states) == {("j", 0), ("j", 1)}


def test_record_round_trip() -> None:
    ev = DropoffEvaluator([defn()])
    r = run(ev, [(100, 10)] * 3 + [(100, 80)])[0]
    assert AlertRecord.from_dict(r.to_dict()) == r


def test_a_retraction_forgets_an_instance_until_its_window_is_final() -> None:
    d = defn()
    ev = DropoffEvaluator([d])
    ev.observe(StepReached("j", "x", 0, 10 * W + 5, "web"))
    ev.observe(StepReached("j", "x", 1, 10 * W + 60_000, "web"))  # continues: key 0 and 1
    assert ev.keys_for(retraction("j", "x", 1)) == [("j", 0), ("j", 1)]
    assert ev.keys_for(retraction("j", "x", 5)) == [("j", 0), ("j", 1)]  # goal has no key
    assert ev.observe(retraction("j", "x", 1))
    for step in (0, 1):  # forgotten; a mark stays, in case the observation comes after it
        assert ev.state("j", step).entries["x"][:2] == [None, None]
    assert ev.observe(retraction("j", "never-seen", 0))  # nothing to forget: fine
    # once its window is final it was counted and reported: a retraction changes nothing
    for i in range(12):
        ev.observe(StepReached("j", f"y{i}", 0, 11 * W + 5, "web"))
    ev.advance(12 * W + H + 1)
    st = ev.state("j", 0)
    counted = {k: list(h.rates) for k, h in st.history.items()}
    assert counted["web"] and not st.entries
    assert ev.observe(retraction("j", "y0", 0))
    assert {k: list(h.rates) for k, h in st.history.items()} == counted
