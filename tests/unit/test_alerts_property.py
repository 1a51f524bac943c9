"""Property: the incremental evaluator equals the batch reference (tests/reference/alerts_ref.py).

Observations reach the evaluator in any order the lateness allows (each one at most
`lateness` behind the newest seen), with duplicates, superseded earlier guesses of a
reached time, watermark advances at random points and restarts from serialized state.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.definitions import AlertRule, JourneyDefinition
from stream.engine.dropoff import DropoffEvaluator
from stream.engine.outputs import StepReached
from tests.profiles import examples
from tests.reference import alerts_ref
from tests.reference.journeys_ref import Ev, Instance, all_journeys

STEPS = ("s0", "s1", "s2", "s3")
CHANNELS = ("web", "app", "store")


@st.composite
def definitions(draw: st.DrawFn) -> JourneyDefinition:
    rule = AlertRule(
        window=f"{draw(st.integers(5, 20))}ms",
        horizon=f"{draw(st.integers(0, 25))}ms",
        baseline_windows=draw(st.integers(3, 6)),
        min_volume=draw(st.integers(1, 4)),
        threshold=draw(st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.3])),
        confidence=draw(st.sampled_from([0.3, 0.6, 0.8, 0.95])),
    )
    return JourneyDefinition(name="j", steps=STEPS, abandon_after="40ms",
                             conversion_window="200ms", alert=rule)


@st.composite
def instances(draw: st.DrawFn) -> list[Instance]:
    out = []
    for i in range(draw(st.integers(0, 70))):
        t = draw(st.integers(0, 240))
        inst = Instance(f"i{i}", "j", f"c{i}", t)
        furthest = draw(st.integers(0, len(STEPS) - 1))
        s = 0
        while s <= furthest:
            ch = draw(st.sampled_from(CHANNELS))
            jump = draw(st.integers(1, 2))  # several steps reached at once
            for k in range(s, min(s + jump, furthest + 1)):
                inst.reached[k] = (t, ch)
            s += jump
            t += draw(st.integers(0, 30))
        out.append(inst)
    return out


def observations(insts: list[Instance]) -> list[StepReached]:
    """What an engine emits: every reached step (skipped ones included) at its time."""
    return [StepReached(inst.journey, inst.instance_id, k, t, ch)
            for inst in insts for k, (t, ch) in inst.reached.items()]


def schedule(obs: list[StepReached], rnd: random.Random, lateness: int) -> list[StepReached]:
    """Arrival order: each observation `delay <= lateness` after its time, so none is late.

    Sometimes the engine first saw a later event of the step (within that delay, so the
    true one is not late when it comes) and emitted it before the earlier, true one.
    """
    keyed = []
    for i, o in enumerate(obs):
        delay = rnd.randint(0, lateness)
        arrival = o.reached_at_ms + delay
        if delay and rnd.random() < 0.15:
            guess = replace(o, reached_at_ms=o.reached_at_ms + rnd.randint(1, delay),
                            channel=rnd.choice(CHANNELS))
            keyed.append((arrival, i, 0, guess))
        keyed.append((arrival, i, 1, o))
    keyed.sort(key=lambda x: x[:3])
    return [o for *_, o in keyed]


def replay(d: JourneyDefinition, obs: list[StepReached], final_wm: int, seed: int) -> list[Any]:
    """Feed obs shuffled within a lateness, advancing the watermark and restarting sometimes."""
    rnd = random.Random(seed)
    lateness = rnd.randint(0, 30)
    ev = DropoffEvaluator([d])
    out = []
    newest = None
    for o in schedule(obs, rnd, lateness):
        newest = o.reached_at_ms if newest is None else max(newest, o.reached_at_ms)
        assert ev.observe(o) or ev.keys_for(o) == []  # nothing is late in this schedule
        if rnd.random() < 0.2:
            out.extend(ev.advance(newest - lateness))
        if rnd.random() < 0.05:
            ev.observe(o)  # re-delivery
        if rnd.random() < 0.05:
            restarted = DropoffEvaluator([d])
            restarted.loads(ev.dumps())
            ev = restarted
    out.extend(ev.advance(final_wm))
    assert ev.late == 0
    return out


def as_ref(records: list[Any]) -> list[alerts_ref.RefAlert]:
    return [
        alerts_ref.RefAlert(r.kind, r.journey, r.step, r.channel, r.window_start_ms,
                            r.population, r.dropped, r.baseline)
        for r in records
    ]


def canonical(alerts: list[alerts_ref.RefAlert]) -> list[alerts_ref.RefAlert]:
    return sorted(alerts, key=lambda a: (a.step, a.channel, a.window_start))


@given(d=definitions(), insts=instances(), seed=st.integers(0, 2**32), final=st.integers(0, 400))
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_incremental_equals_batch(
    d: JourneyDefinition, insts: list[Instance], seed: int, final: int
) -> None:
    # the final watermark is at or beyond every observation, as the schedule requires
    final_wm = max([t for i in insts for t, _ in i.reached.values()], default=0) + final
    got = replay(d, observations(insts), final_wm, seed)
    want = alerts_ref.alerts(d, insts, final_wm)
    assert canonical(as_ref(got)) == canonical(want)
    ids = [r.alert_id for r in got]
    assert len(ids) == len(set(ids))  # one record per (step, channel or all, window)


@st.composite
def customer_events(draw: st.DrawFn) -> list[Ev]:
    types = [*STEPS, "noise"]
    events = []
    for c in range(draw(st.integers(1, 25))):
        t = draw(st.integers(0, 200))
        for e in range(draw(st.integers(1, 8))):
            t += draw(st.integers(0, 25))
            events.append(Ev(f"e{c}_{e}", f"c{c}", draw(st.sampled_from(types)),
                             draw(st.sampled_from(CHANNELS)), t))
    return events


@given(d=definitions(), events=customer_events(), seed=st.integers(0, 2**32))
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_equals_batch_over_reference_journeys(
    d: JourneyDefinition, events: list[Ev], seed: int
) -> None:
    """End to end from events: journeys_ref instances -> observations -> evaluator."""
    insts = all_journeys([d], events, watermark=None)
    final_wm = max(e.t for e in events) + 100
    got = replay(d, observations(insts), final_wm, seed)
    assert canonical(as_ref(got)) == canonical(alerts_ref.alerts(d, insts, final_wm))


def test_generators_do_fire() -> None:
    """Guard against a vacuous property: the strategies produce alerts and recoveries."""
    kinds: set[str] = set()
    rnd = random.Random(7)
    d = JourneyDefinition(name="j", steps=STEPS, alert=AlertRule(
        window="10ms", horizon="5ms", baseline_windows=3, min_volume=3, threshold=0.1,
        confidence=0.8))
    for trial in range(40):
        insts = []
        for i in range(300):
            t = rnd.randint(0, 400)
            inst = Instance(f"i{i}", "j", "c", t)
            inst.reached[0] = (t, "web")
            bad = 200 <= t < 260 and trial % 2 == 0
            if rnd.random() > (0.9 if bad else 0.2):
                inst.reached[1] = (t + 2, "web")
            insts.append(inst)
        kinds |= {a.kind for a in alerts_ref.alerts(d, insts, 1000)}
    assert kinds == {"fired", "recovered"}
