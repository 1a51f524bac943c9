"""Reference drop-off alerts (DESIGN.md "Drop-off alert"), computed in batch.

Deliberately naive and independent of stream/alerting: all instances are known up front
(tests/reference/journeys_ref.py Instances), windows are walked in time order, and the
binomial tail is an exact rational sum. Readings (the same as docs/alerting.md):
- population of (step s, window): instances whose reached[s] time is in the window;
- dropped: no later step k > s with reached[k] time <= reached[s] time + horizon;
- a window is reported iff window_end + horizon <= watermark;
- baseline: mean rate of the most recent `baseline_windows` earlier qualifying windows
  (population >= min_volume, not fired) of the same (step, channel or "all"); >= 3 needed;
- fire: population >= min_volume, rate - baseline > threshold, P(X >= dropped) < 1 - confidence;
- recovered: while a firing is open, a qualifying window that does not fire and has
  rate - baseline < threshold.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from math import comb
from typing import Any

from journeys.definitions import JourneyDefinition
from journeys.events import parse_occurred_at
from tests.reference.journeys_ref import Instance
from tests.reference.stitching_ref import links_of


@dataclass(frozen=True)
class RefAlert:
    kind: str  # fired | recovered
    journey: str
    step: str
    channel: str  # a channel or "all"
    window_start: int
    population: int
    dropped: int
    baseline: float


def exact_binom_sf(k: int, n: int, p: float | Fraction) -> Fraction:
    """P(X >= k), X ~ Bin(n, p), as an exact rational (p is taken exactly).

    Integer arithmetic: with p = a/b the tail is sum C(n,i) a^i (b-a)^(n-i) / b^n.
    """
    q = Fraction(p)
    a, b = q.numerator, q.denominator
    lo = max(k, 0)
    c_pows = [1]
    for _ in range(n - lo):
        c_pows.append(c_pows[-1] * (b - a))
    total, a_pow = 0, a**lo
    for i in range(lo, n + 1):
        total += comb(n, i) * a_pow * c_pows[n - i]
        a_pow *= a
    return Fraction(total, b**n)


def step_samples(
    d: JourneyDefinition, instances: Iterable[Instance], step: int
) -> list[tuple[int, str, bool]]:
    """(reached_at, channel, dropped) of every instance that reached `step`. The
    evaluator names instances by their opening event (docs/alerting.md "Stitching and
    observations"): a device's run and the customer's replay of it from the same
    opening event are one entry, each step at the earliest either reached it."""
    merged: dict[str, dict[int, tuple[int, str]]] = {}
    for inst in instances:
        if inst.journey != d.name:
            continue
        opening = inst.path[0].event_id if inst.path else inst.instance_id
        reached = merged.setdefault(opening, {})
        for k, tc in inst.reached.items():
            reached[k] = min(reached.get(k, tc), tc)
    out = []
    for reached in merged.values():
        if step not in reached:
            continue
        t, ch = reached[step]
        later = [reached[k][0] for k in reached if k > step]
        continued = any(tk <= t + d.alert.horizon_ms for tk in later)
        out.append((t, ch, not continued))
    return out


Windows = dict[tuple[int, str], list[int]]  # (window start, key) -> [population, dropped]


def step_windows(d: JourneyDefinition, instances: Iterable[Instance], step: int,
                 watermark: int) -> Windows:
    """Population and drops of every window of `step` final at `watermark`."""
    rule = d.alert
    windows: Windows = {}
    for t, ch, dropped in step_samples(d, instances, step):
        ws = t // rule.window_ms * rule.window_ms
        if ws + rule.window_ms + rule.horizon_ms > watermark:
            continue
        for key in ("all", ch):
            c = windows.setdefault((ws, key), [0, 0])
            c[0] += 1
            c[1] += int(dropped)
    return windows


def windows_as_of(d: JourneyDefinition, events: list[dict[str, Any]], junk: set[str],
                  watermark: int, split: Callable[..., Any]) -> dict[int, Windows]:
    """Per step, the windows final at `watermark`, each counting the instances as
    known at its final point: stitched with only the links made before it
    (docs/alerting.md "Stitching and observations"). `split` is
    tests/reference/stitching_ref.split (passed in: no import cycle)."""
    rule = d.alert
    events = [e if isinstance(e["occurred_at"], int) else
              {**e, "occurred_at": parse_occurred_at(e["occurred_at"])} for e in events]
    # a step is reached at an event's time: only windows holding an event can count any
    starts = sorted({e["occurred_at"] // rule.window_ms * rule.window_ms for e in events})
    link_times = sorted({t for _cust, t in links_of(events, junk).values()})
    by_links: dict[int, list[Instance]] = {}  # how many links are known -> instances
    out: dict[int, Windows] = {s: {} for s in range(len(d.steps) - 1)}
    for ws in starts:
        final_at = ws + rule.window_ms + rule.horizon_ms
        if final_at > watermark:
            break
        known = bisect_left(link_times, final_at)
        if known not in by_links:
            by_links[known] = split(events, final_at)
        for s in out:
            for (w, key), c in step_windows(d, by_links[known], s, final_at).items():
                if w == ws:
                    out[s][(w, key)] = c
    return out


def alerts(d: JourneyDefinition, instances: Iterable[Instance], watermark: int,
           windows: dict[int, Windows] | None = None) -> list[RefAlert]:
    """Every alert and recovery of definition `d` for windows final at `watermark`
    (`windows`: per step, as `windows_as_of` gives them, instead of from `instances`)."""
    rule = d.alert
    instances = list(instances)
    out: list[RefAlert] = []
    for s in range(len(d.steps) - 1):
        per = windows[s] if windows is not None else step_windows(d, instances, s, watermark)
        history: dict[str, list[float]] = {}
        active: dict[str, bool] = {}
        for (ws, key) in sorted(per, key=lambda wk: (wk[0], wk[1] != "all", wk[1])):
            n, x = per[(ws, key)]
            past = history.setdefault(key, [])
            recent = past[-rule.baseline_windows:]
            fired = recovered = False
            baseline = 0.0
            if n >= rule.min_volume and len(recent) >= 3:
                baseline = sum(recent) / len(recent)
                excess = x / n - baseline
                unlikely = exact_binom_sf(x, n, baseline) < Fraction(1.0 - rule.confidence)
                fired = excess > rule.threshold and unlikely
                recovered = active.get(key, False) and not fired and excess < rule.threshold
            if not fired and n >= rule.min_volume:
                past.append(x / n)
            if fired:
                active[key] = True
            if recovered:
                active[key] = False
            if fired or recovered:
                kind = "fired" if fired else "recovered"
                out.append(RefAlert(kind, d.name, d.steps[s], key, ws, n, x, baseline))
    return out
