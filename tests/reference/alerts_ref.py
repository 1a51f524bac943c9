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

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from math import comb

from journeys.definitions import JourneyDefinition
from tests.reference.journeys_ref import Instance


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
    """(reached_at, channel, dropped) of every instance that reached `step`."""
    out = []
    for inst in instances:
        if inst.journey != d.name or step not in inst.reached:
            continue
        t, ch = inst.reached[step]
        later = [inst.reached[k][0] for k in inst.reached if k > step]
        continued = any(tk <= t + d.alert.horizon_ms for tk in later)
        out.append((t, ch, not continued))
    return out


def alerts(d: JourneyDefinition, instances: Iterable[Instance], watermark: int) -> list[RefAlert]:
    """Every alert and recovery of definition `d` for windows final at `watermark`."""
    rule = d.alert
    instances = list(instances)
    out: list[RefAlert] = []
    for s in range(len(d.steps) - 1):
        windows: dict[tuple[int, str], list[int]] = {}  # (window, key) -> [population, dropped]
        for t, ch, dropped in step_samples(d, instances, s):
            ws = t // rule.window_ms * rule.window_ms
            if ws + rule.window_ms + rule.horizon_ms > watermark:
                continue
            for key in ("all", ch):
                c = windows.setdefault((ws, key), [0, 0])
                c[0] += 1
                c[1] += int(dropped)
        history: dict[str, list[float]] = {}
        active: dict[str, bool] = {}
        for (ws, key) in sorted(windows, key=lambda wk: (wk[0], wk[1] != "all", wk[1])):
            n, x = windows[(ws, key)]
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
