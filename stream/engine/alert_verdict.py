"""The verdict over one final alert window (DESIGN.md "Drop-off alert"), pure.

What *dropped* means, the firing test (baseline of earlier qualifying windows, excess
over the threshold, binomial tail below 1 - confidence), recovery, the window grid and
the record an alert is: shared by the incremental evaluator (stream.engine.dropoff),
the alert stage and the delivery side. The readings are in docs/alerting.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from journeys.definitions import AlertRule
from stream.engine.binomial import binom_sf
from stream.eventtime.watermarks import NO_WATERMARK

ALL_CHANNELS = "all"
MIN_BASELINE_WINDOWS = 3

AlertKind = Literal["fired", "recovered"]

@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert or recovery notice for a (journey, step, channel-or-all, window)."""

    alert_id: str
    kind: AlertKind
    journey: str
    step: str
    step_index: int
    channel: str  # a channel, or ALL_CHANNELS for the total
    window_start_ms: int
    window_end_ms: int
    horizon_ms: int
    population: int
    dropped: int
    rate: float
    baseline: float
    baseline_windows: int  # how many earlier windows the baseline is the mean of
    threshold: float
    confidence: float
    p_value: float
    resolves: str | None = None  # recovered: the alert_id of the last firing it closes
    definition_version: str = ""  # of the definition whose rule judged it (in the key)

    @property
    def final_at_ms(self) -> int:
        """Event time from which the window is final (watermark >= this)."""
        return self.window_end_ms + self.horizon_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def alert_id(journey: str, step: str, channel: str, window_start_ms: int) -> str:
    """Deterministic: a window emits at most one record per key, so re-emission is idempotent."""
    raw = f"{journey}\x1f{step}\x1f{channel}\x1f{window_start_ms}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def window_start(t_ms: int, window_ms: int) -> int:
    return t_ms - t_ms % window_ms  # floor, also for negative times


def final_before(watermark: int, rule: AlertRule) -> int:
    """Windows starting before this are final at `watermark` (ws + window + horizon <= wm)."""
    if watermark <= NO_WATERMARK:
        return NO_WATERMARK
    last_final = watermark - rule.horizon_ms - rule.window_ms  # latest start that is final
    return window_start(last_final, rule.window_ms) + rule.window_ms


def is_dropped(reached_at: int, next_at: int | None, horizon_ms: int) -> bool:
    """No later step at or before reached_at + horizon."""
    return next_at is None or next_at - reached_at > horizon_ms


@dataclass(frozen=True, slots=True)
class Verdict:
    fired: bool
    recovered: bool
    baseline: float | None  # None: fewer than MIN_BASELINE_WINDOWS qualifying windows
    baseline_windows: int
    p_value: float


def judge(
    rule: AlertRule, history: list[float], active: bool, population: int, dropped: int
) -> Verdict:
    """Decide one window of one (step, channel) against its history of qualifying rates."""
    rates = history[-rule.baseline_windows :]
    if population < rule.min_volume or len(rates) < MIN_BASELINE_WINDOWS:
        return Verdict(False, False, None, len(rates), 1.0)
    baseline = sum(rates) / len(rates)
    excess = dropped / population - baseline
    p_value = binom_sf(dropped, population, baseline)
    fired = excess > rule.threshold and p_value < 1.0 - rule.confidence
    recovered = active and not fired and excess < rule.threshold
    return Verdict(fired, recovered, baseline, len(rates), p_value)
