"""Drop-off alerting in the worker, batch logic (pure: no Faust, no I/O).

    by-customer ──customers──► <prefix>.step-reached ──alerts──► alerts table, alerts topic,
      (P partitions)  StepReachedRouter    (P partitions)   AlertStage    webhooks

Why a topic of its own: the evaluator's state lives per (journey, step) — a handful of
keys — while observations come from every by-customer partition. So the customer
stage repartitions each observation to the partitions of the state keys it concerns
(`state_key` k for its population, k - 1 for the continuation of the step before) and
broadcasts its partition's watermark to *every* step-reached partition, after that
partition's observations and in the same message. Each alert partition keeps the last
watermark of each of the P by-customer partitions and evaluates at their minimum, so
a window is final only when every source has passed it (DESIGN.md "Drop-off alert").

Message (value; key none, partition explicit):

    {"v": 1, "o": [[journey, instance_id, step_index, reached_at_ms, channel], ...],
             "w": [[by-customer partition, watermark], ...]}

Watermarks are sent only when they move a window boundary the alert rules care about
(`final_before` of some rule), which is exact: the evaluator only ever uses
final_before(min watermark) = min(final_before(watermark)), so an idle worker's clock
ticking every 0.5 s costs no messages. A by-customer partition that has reported but
never seen an event (watermark NO_WATERMARK) does not hold the others back (an *idle
source*); one that never reported does.

Scale: alert work is spread by state key (sum of non-goal steps over definitions, 8
for the default file), at most P ways; a step's population is a few hundred instances
per window, so one partition's worth is cheap. Watermark broadcast costs P messages per
window boundary per source partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from journeys.definitions import JourneyDefinition
from stream.engine.dropoff import (
    NO_WATERMARK,
    AlertRecord,
    DropoffEvaluator,
    StepAlertState,
    StepReached,
    final_before,
    state_key,
)
from stream.stages.envelopes import partition_for

FORMAT = 1
MAX_OBSERVATIONS = 5000  # per message (~100 bytes each)
MARKS_PREFIX = b"\x00marks:"  # table key of one alert partition's source watermarks

GetState = Callable[[bytes], bytes | None]
Reached = Mapping[int, tuple[Sequence[StepReached], int]]
"""by-customer partition -> (observations settled in a batch, watermark after it)."""

StateKey = tuple[str, int]


def marks_key(partition: int) -> bytes:
    return MARKS_PREFIX + str(partition).encode()


def key_bytes(key: StateKey) -> bytes:
    return state_key(*key).encode()


class _Keys:
    """Which state keys an observation concerns and where each key lives."""

    def __init__(self, definitions: Sequence[JourneyDefinition], partitions: int) -> None:
        self.partitions = partitions
        self.definitions = {d.name: d for d in definitions}
        self._evaluator = DropoffEvaluator(definitions)  # only for keys_for
        self.partition: dict[StateKey, int] = {}
        self.in_partition: dict[int, list[StateKey]] = {}
        for d in definitions:
            for s in range(len(d.steps) - 1):
                q = partition_for(state_key(d.name, s), partitions)
                self.partition[(d.name, s)] = q
                self.in_partition.setdefault(q, []).append((d.name, s))
        rules = {(d.alert.window_ms, d.alert.horizon_ms): d.alert for d in definitions}
        self.rules = [rules[k] for k in sorted(rules)]  # one per distinct window boundary

    def keys_for(self, obs: StepReached) -> list[StateKey]:
        return self._evaluator.keys_for(obs)

    def quantize(self, watermark: int) -> tuple[int, ...]:
        """What of a watermark the evaluator can see: the final window boundary per rule."""
        return tuple(final_before(watermark, rule) for rule in self.rules)


class StepReachedRouter:
    """Customer-stage side: a batch's observations and watermarks -> step-reached messages.

    Call `route`, send every message, and only once all are acknowledged `confirm` the
    returned watermarks (a failed send then re-sends them with the retried batch).
    """

    def __init__(self, definitions: Sequence[JourneyDefinition], partitions: int) -> None:
        self.keys = _Keys(definitions, partitions)
        self._sent: dict[int, tuple[int, ...]] = {}  # source -> quantized wm sent

    def route(self, reached: Reached) -> tuple[list[tuple[int, bytes]], dict[int, Any]]:
        """(messages as (step-reached partition, value), watermarks to confirm)."""
        keys = self.keys
        obs_for: dict[int, list[list[Any]]] = {}
        marks: list[list[int]] = []
        confirm: dict[int, Any] = {}
        for p, (observations, watermark) in sorted(reached.items()):
            for o in observations:
                row = [o.journey, o.instance_id, o.step_index, o.reached_at_ms, o.channel]
                for q in {keys.partition[k] for k in keys.keys_for(o)}:
                    obs_for.setdefault(q, []).append(row)
            quant = keys.quantize(watermark)
            if p not in self._sent or self._sent[p] != quant:
                marks.append([p, max(watermark, NO_WATERMARK)])
                confirm[p] = quant
        messages: list[tuple[int, bytes]] = []
        targets = range(keys.partitions) if marks else sorted(obs_for)
        for q in targets:
            rows = obs_for.get(q, [])
            chunks = [rows[i:i + MAX_OBSERVATIONS]
                      for i in range(0, len(rows), MAX_OBSERVATIONS)] or [[]]
            for n, chunk in enumerate(chunks):
                body: dict[str, Any] = {"v": FORMAT, "o": chunk}
                if n == len(chunks) - 1 and marks:
                    body["w"] = marks  # after this source's observations, never before
                messages.append((q, orjson.dumps(body)))
        return messages, confirm

    def confirm(self, sent: Mapping[int, Any]) -> None:
        self._sent.update(sent)


def decode(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("v") != FORMAT:
        return None
    return body


@dataclass
class AlertBatch:
    """What one batch of step-reached messages produced: emit `records`, then store
    `states` (table key -> (changelog partition, value)), then commit."""

    records: list[AlertRecord] = field(default_factory=list)
    states: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    observations: int = 0
    late: int = 0
    undecodable: int = 0
    watermarks: dict[int, int] = field(default_factory=dict)  # alert partition -> used


class AlertStage:
    """Alert-partition side: per-partition source watermarks and per-key evaluator
    states, parsed once and cached; the table (changelog) holds their bytes."""

    def __init__(self, definitions: Sequence[JourneyDefinition], partitions: int) -> None:
        self.keys = _Keys(definitions, partitions)
        self.sources = partitions  # by-customer partitions (same count as ours)
        self._states: dict[StateKey, StepAlertState] = {}
        self._marks: dict[int, dict[int, int]] = {}

    def forget(self) -> None:
        """After a rebalance/recovery: re-read everything from the table when next needed."""
        self._states.clear()
        self._marks.clear()

    def marks(self, partition: int, get: GetState) -> dict[int, int]:
        m = self._marks.get(partition)
        if m is None:
            raw = get(marks_key(partition))
            m = {int(p): int(w) for p, w in orjson.loads(raw).items()} if raw else {}
            self._marks[partition] = m
        return m

    def watermark(self, partition: int, get: GetState) -> int:
        """Min over all source partitions; NO_WATERMARK until each has reported.
        Sources that have reported no events yet (idle) do not count."""
        m = self.marks(partition, get)
        if len(m) < self.sources:
            return NO_WATERMARK
        live = [w for w in m.values() if w > NO_WATERMARK]
        return min(live) if live else NO_WATERMARK

    def state(self, key: StateKey, get: GetState, watermark: int) -> StepAlertState:
        st = self._states.get(key)
        if st is None:
            d = self.keys.definitions[key[0]]
            st = StepAlertState.restore(d, key[1], get(key_bytes(key)), watermark)
            self._states[key] = st
        return st

    def prepare(self, records: Iterable[tuple[int, bytes | None]], get: GetState) -> AlertBatch:
        """Apply a batch of (partition, value): all observations first, then the
        watermarks, then finalize whatever windows the partitions' minimum passed."""
        batch = AlertBatch()
        keys = self.keys
        touched: set[StateKey] = set()
        parts: set[int] = set()
        moved: set[int] = set()
        for q, value in records:
            body = decode(value)
            if body is None:
                batch.undecodable += 1
                continue
            parts.add(q)
            wm = self.watermark(q, get)
            for row in body.get("o", ()):
                obs = StepReached(row[0], row[1], int(row[2]), int(row[3]), row[4])
                for key in keys.keys_for(obs):
                    if keys.partition[key] != q:
                        continue
                    batch.observations += 1
                    if self.state(key, get, wm).observe(obs):
                        touched.add(key)
                    else:
                        batch.late += 1
                        touched.add(key)  # the late count changed
            m = self.marks(q, get)
            for p, w in body.get("w", ()):
                if p not in m or w > m[p]:
                    m[p] = w
                    moved.add(q)
        for q in sorted(parts):
            wm = self.watermark(q, get)
            batch.watermarks[q] = wm
            for key in keys.in_partition.get(q, ()):
                st = self.state(key, get, wm)
                before = st.final_before
                batch.records.extend(st.advance(keys.definitions[key[0]].alert, wm))
                if st.final_before != before:
                    touched.add(key)
        for key in touched:
            batch.states[key_bytes(key)] = (keys.partition[key], self._states[key].dumps())
        for q in moved:
            batch.states[marks_key(q)] = (q, orjson.dumps(
                {str(p): w for p, w in sorted(self._marks[q].items())}))
        batch.records.sort(key=lambda r: (r.window_start_ms, r.journey, r.step_index))
        return batch
