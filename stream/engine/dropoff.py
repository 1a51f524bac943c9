"""Incremental drop-off alert evaluation (DESIGN.md "Drop-off alert"), pure: no Kafka, no I/O.

Input: `StepReached` observations, emitted by the journey engine whenever an instance
first reaches a step (every step on a jump, skipped steps included, at the jump's time
and channel), and watermark advances. Output: `AlertRecord`s (kind "fired"/"recovered")
for windows that became final. The exact readings (also in docs/alerting.md and
tests/reference/alerts_ref.py, which this must equal):

- windows are tumbling, aligned to the epoch: [ws, ws + window); an instance belongs to
  the window holding the time it first reached step s; s ranges over every step but the
  goal;
- *dropped*: no later step reached at or before reached_at + horizon. A later step at
  exactly reached_at + horizon counts as continued (inclusive). Because skipped steps
  count as reached at the jump, the earliest later step is always step s + 1;
- a window is final once watermark >= window_end + horizon (window_end exclusive; the
  watermark means every event before it was seen, as in stream.engine.sessions.EventClock);
  observations for final windows are late: counted and ignored;
- baseline: mean of the rates of the most recent `baseline_windows` earlier windows of
  the same (step, channel-or-all) with population >= min_volume that did not fire;
  windows with no population are skipped entirely; fewer than 3 such windows: no alert;
- fires iff population >= min_volume and rate - baseline > threshold and
  P(X >= dropped) < 1 - confidence, X ~ Binomial(population, baseline);
- recovered: after a firing, the first window with population >= min_volume that does
  not fire and has rate - baseline < threshold ("back under baseline + threshold").

State is one `StepAlertState` per (journey, step index): small, orjson-serializable,
meant to be a Faust table value keyed by `state_key(journey, step)`. An observation of
step k goes to keys k (population) and k - 1 (continuation): see `DropoffEvaluator.keys_for`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from journeys.definitions import AlertRule, JourneyDefinition
from stream.engine.alert_entries import AlertEntries, Entry, MemoryEntries
from stream.engine.alert_verdict import (
    ALL_CHANNELS,
    AlertRecord,
    alert_id,
    final_before,
    is_dropped,
    judge,
    window_start,
)
from stream.engine.outputs import StepReached, retracted_steps
from stream.eventtime.watermarks import NO_WATERMARK

_STATE_FORMAT = 1


@dataclass(slots=True)
class ChannelHistory:
    """Rates of qualifying non-fired windows (oldest first, at most baseline_windows)."""

    rates: list[float] = field(default_factory=list)
    active: str | None = None  # alert_id of the firing not yet recovered


@dataclass(slots=True)
class StepAlertState:
    """Everything the evaluator keeps for one (journey, step): the Faust table value.

    `entries`: instance_id -> [reached_at | None, channel | None, next_at | None, ...]
    for instances in windows not yet final (reached_at None: only the continuation is
    known so far, observations arrive in any order); a dict, or on disk in the worker
    with the RocksDB store (stream.engine.alert_entries). The rest is O(windows).
    """

    journey: str
    step_index: int
    step: str
    window_ms: int
    horizon_ms: int
    final_before: int = NO_WATERMARK
    entries: AlertEntries = field(default_factory=MemoryEntries)
    history: dict[str, ChannelHistory] = field(default_factory=dict)
    late: int = 0

    @classmethod
    def new(cls, definition: JourneyDefinition, step_index: int) -> StepAlertState:
        if not 0 <= step_index < len(definition.steps) - 1:
            raise ValueError(f"{definition.name}: no alerts for step index {step_index}")
        rule = definition.alert
        return cls(definition.name, step_index, definition.steps[step_index],
                   rule.window_ms, rule.horizon_ms)

    @classmethod
    def restore(cls, definition: JourneyDefinition, step_index: int, data: bytes | None,
                watermark: int, entries: AlertEntries | None = None) -> StepAlertState:
        """A table value back as state; a missing one, or one of a changed definition,
        starts fresh with every window already final at `watermark` closed. `entries`:
        the (empty) index to fill. (Entry records stored beside a head: the alert
        stage's, stream/stages/alert_chunks.py, read after `restore_head`.)"""
        return cls.restore_head(definition, step_index, data, watermark, entries)[0]

    @classmethod
    def restore_head(cls, definition: JourneyDefinition, step_index: int,
                     data: bytes | None, watermark: int,
                     entries: AlertEntries | None = None) -> tuple[StepAlertState, bool]:
        """`restore`, and whether the stored head was kept: only then do entry records
        stored beside it belong to the state."""
        if data:
            st = cls.loads(data, entries)
            if st.matches(definition) and st.step_index == step_index:
                return st, True
            for iid, _e in list(st.entries.ordered()):
                st.entries.delete(iid)
        st = cls.new(definition, step_index)
        if entries is not None:
            st.entries = entries
        st.final_before = final_before(watermark, definition.alert)
        return st, False

    def matches(self, definition: JourneyDefinition) -> bool:
        """False when the definition changed under this state (it must then start over)."""
        steps = definition.steps
        return (
            self.journey == definition.name
            and self.step_index < len(steps) - 1
            and steps[self.step_index] == self.step
            and (self.window_ms, self.horizon_ms)
            == (definition.alert.window_ms, definition.alert.horizon_ms)
        )

    def _final_at(self, reached: int) -> int:
        """Event time at which the window holding `reached` becomes final."""
        return window_start(reached, self.window_ms) + self.window_ms + self.horizon_ms

    def _entry(self, iid: str) -> Entry:
        """The entry to change and `put` back (a new one if there is none)."""
        e = self.entries.get(iid)
        if e is None:
            e = [None, None, None, None, None]
        elif len(e) < 5:  # stored before retraction marks and as-of times
            e.extend([None] * (5 - len(e)))
        return e

    def observe(self, obs: StepReached) -> bool:
        """Apply one observation (idempotent, any order). False if late or not for this key.

        Entry: [reached_at, channel, next_at, retracted_as_of, [[next_at, as_of], ...]]. An
        observation with `as_of` (a stitching merge's) applies only to a window not
        final at that event time (`as_of < final_at`), whatever the order it arrives in:
        a retraction that comes before the observation it retracts is kept as a mark."""
        k, t, as_of = obs.step_index, obs.reached_at_ms, obs.as_of
        furthest = retracted_steps(obs)
        if furthest is not None:
            if obs.journey != self.journey or furthest < self.step_index:
                return False
            e = self.entries.get(obs.instance_id)
            if e is not None and e[0] is not None:
                if as_of is not None and as_of >= self._final_at(e[0]):
                    return True  # merged after its window's final point: it stays
                if window_start(e[0], self.window_ms) < self.final_before:
                    self.late += 1  # its window was reported already
                    return False
            e = self._entry(obs.instance_id)
            e[0] = e[1] = None
            at = as_of if as_of is not None else NO_WATERMARK
            e[3] = at if e[3] is None else min(e[3], at)
            self.entries.put(obs.instance_id, e)
            return True
        if obs.journey != self.journey or k < self.step_index:
            return False
        if k == self.step_index:
            final_at = self._final_at(t)
            if as_of is not None and as_of >= final_at:
                return True  # a merge after this window's final point: not counted in it
            if window_start(t, self.window_ms) < self.final_before:
                self.late += 1
                return False
            e = self._entry(obs.instance_id)
            retracted = e[3] is not None and e[3] < final_at and (as_of is None or as_of < e[3])
            # retracted: by a merge before this window was final (the entry is kept as is)
            if not retracted and (e[0] is None or (t, obs.channel) < (e[0], e[1])):
                e[0], e[1] = t, obs.channel
            self.entries.put(obs.instance_id, e)
            return True
        if t < self.final_before:  # can only concern instances of final windows
            if as_of is not None and as_of >= self._final_at(t):
                return True  # a merge after their final points: not counted in them
            self.late += 1
            return False
        e = self._entry(obs.instance_id)
        if as_of is None:
            if e[2] is None or t < e[2]:
                e[2] = t
        elif e[2] is None or t < e[2]:
            # which window it may continue depends on its as-of time: keep every
            # (next_at, as_of) no other one beats on both
            front = [p for p in (e[4] or []) if not (t <= p[0] and as_of <= p[1])]
            if not any(p[0] <= t and p[1] <= as_of for p in front):
                front.append([t, as_of])
            e[4] = sorted(front)
        self.entries.put(obs.instance_id, e)
        return True

    def advance(self, rule: AlertRule, watermark: int,
                definition_version: str = "") -> list[AlertRecord]:
        """Finalize every window the watermark has passed; return their records in order."""
        new_final = final_before(watermark, rule)
        if new_final <= self.final_before:
            return []
        counts: dict[int, dict[str, list[int]]] = {}
        entries = self.entries
        for iid, entry in entries.ordered():
            reached, channel, next_at, retracted, next_as_of = [*entry, None, None][:5]
            if reached is None:
                # continuation or retraction marks: kept while an observation they
                # concern could still come in time
                keep = [x for x in (next_at, retracted) if x is not None]
                keep += [p[0] for p in next_as_of or ()]
                if not keep or max(keep) < new_final:
                    entries.delete(iid)
                continue
            ws = window_start(reached, self.window_ms)
            if ws >= new_final:
                continue
            entries.delete(iid)
            final_at = self._final_at(reached)  # merges from then on do not count
            later = [p[0] for p in next_as_of or () if p[1] < final_at]
            next_at = min([x for x in (next_at, *later) if x is not None], default=None)
            drop = int(is_dropped(reached, next_at, self.horizon_ms))
            per = counts.setdefault(ws, {})
            # a channel literally named "all" is reserved: it counts in the total only
            for key in (ALL_CHANNELS,) if channel == ALL_CHANNELS else (ALL_CHANNELS, channel):
                c = per.setdefault(key, [0, 0])
                c[0] += 1
                c[1] += drop
        self.final_before = new_final
        out: list[AlertRecord] = []
        for ws in sorted(counts):
            per = counts[ws]
            for key in sorted(per, key=lambda ch: (ch != ALL_CHANNELS, ch)):
                population, dropped = per[key]
                out.extend(self._close(rule, ws, key, population, dropped, definition_version))
        return out

    def _close(
        self, rule: AlertRule, ws: int, channel: str, population: int, dropped: int,
        definition_version: str = "",
    ) -> list[AlertRecord]:
        hist = self.history.setdefault(channel, ChannelHistory())
        v = judge(rule, hist.rates, hist.active is not None, population, dropped)
        if not v.fired and population >= rule.min_volume:
            hist.rates.append(dropped / population)
            del hist.rates[: -rule.baseline_windows]
        if not (v.fired or v.recovered):
            return []
        aid = alert_id(self.journey, self.step, channel, ws)
        resolves = None if v.fired else hist.active
        hist.active = aid if v.fired else None
        assert v.baseline is not None
        return [AlertRecord(
            alert_id=aid, kind="fired" if v.fired else "recovered", journey=self.journey,
            step=self.step, step_index=self.step_index, channel=channel,
            window_start_ms=ws, window_end_ms=ws + self.window_ms, horizon_ms=self.horizon_ms,
            population=population, dropped=dropped, rate=dropped / population,
            baseline=v.baseline, baseline_windows=v.baseline_windows,
            threshold=rule.threshold, confidence=rule.confidence, p_value=v.p_value,
            resolves=resolves, definition_version=definition_version,
        )]

    def dumps(self, entries: dict[str, Entry] | None = None) -> bytes:
        """The state as one value; `entries` stands in for the index's (by id)."""
        return orjson.dumps(self.head(dict(self.entries.ordered()) if entries is None
                                      else entries))

    def head(self, entries: dict[str, Entry]) -> dict[str, Any]:
        return {
            "f": _STATE_FORMAT, "j": self.journey, "i": self.step_index, "s": self.step,
            "w": self.window_ms, "h": self.horizon_ms, "F": self.final_before,
            "e": entries, "l": self.late,
            "H": {ch: [h.rates, h.active] for ch, h in self.history.items()},
        }

    @classmethod
    def loads(cls, data: bytes, entries: AlertEntries | None = None) -> StepAlertState:
        """A value back as state, its entries put in `entries` (default: a dict)."""
        o = orjson.loads(data)
        if o.get("f") != _STATE_FORMAT:
            raise ValueError(f"unknown alert state format {o.get('f')!r}")
        index: AlertEntries = MemoryEntries() if entries is None else entries
        for iid, e in o["e"].items():
            index.put(iid, e)
        return cls(
            journey=o["j"], step_index=o["i"], step=o["s"], window_ms=o["w"],
            horizon_ms=o["h"], final_before=o["F"], entries=index, late=o["l"],
            history={ch: ChannelHistory(r, a) for ch, (r, a) in o["H"].items()},
        )


def state_key(journey: str, step_index: int) -> str:
    """Table key of a step's state (also a good Kafka key for routing observations)."""
    return f"{journey}\x1f{step_index}"


class DropoffEvaluator:
    """All alerting state of a set of definitions, for in-process use and tests.

    A Faust worker instead keeps one `StepAlertState` per `state_key` in a table, routes
    each observation to `keys_for(obs)` and calls `StepAlertState.observe` / `advance`.
    """

    def __init__(self, definitions: Iterable[JourneyDefinition]) -> None:
        self.definitions = {d.name: d for d in definitions}
        self.states: dict[tuple[str, int], StepAlertState] = {}
        self.watermark = NO_WATERMARK

    def keys_for(self, obs: StepReached) -> list[tuple[str, int]]:
        """Population of step k lives at key k; its continuation for step k - 1 at k - 1."""
        d = self.definitions.get(obs.journey)
        if d is None:
            return []
        last = len(d.steps) - 1
        furthest = retracted_steps(obs)
        if furthest is not None:  # every step whose population it may be in
            return [(obs.journey, s) for s in range(min(furthest, last - 1) + 1)]
        return [(obs.journey, s) for s in (obs.step_index - 1, obs.step_index) if 0 <= s < last]

    def state(self, journey: str, step_index: int) -> StepAlertState:
        key = (journey, step_index)
        st = self.states.get(key)
        if st is None:
            d = self.definitions[journey]
            st = self.states[key] = StepAlertState.restore(d, step_index, None, self.watermark)
        return st

    def observe(self, obs: StepReached) -> bool:
        """Apply one observation; False when it was late or unknown."""
        applied = [self.state(*k).observe(obs) for k in self.keys_for(obs)]
        return bool(applied) and all(applied)

    def observe_many(self, observations: Iterable[StepReached]) -> int:
        return sum(self.observe(o) for o in observations)

    def advance(self, watermark: int) -> list[AlertRecord]:
        """Move event time forward (never back); records of newly final windows, in order."""
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        out: list[AlertRecord] = []
        for (journey, _), st in sorted(self.states.items()):
            d = self.definitions[journey]
            out.extend(st.advance(d.alert, watermark, d.version))
        out.sort(key=lambda r: (r.window_start_ms, r.journey, r.step_index))
        return out

    @property
    def late(self) -> int:
        return sum(st.late for st in self.states.values())

    def dumps(self) -> bytes:
        return orjson.dumps({
            "f": _STATE_FORMAT, "w": self.watermark,
            "s": [st.dumps().decode() for st in self.states.values()],
        })

    def loads(self, data: bytes) -> None:
        """Restore from `dumps` (a restart); states of changed definitions start over."""
        o = orjson.loads(data)
        if o.get("f") != _STATE_FORMAT:
            raise ValueError(f"unknown alert state format {o.get('f')!r}")
        self.watermark = o["w"]
        self.states = {}
        for raw in o["s"]:
            st = StepAlertState.loads(raw.encode())
            d = self.definitions.get(st.journey)
            if d is not None and st.matches(d):
                self.states[(st.journey, st.step_index)] = st
