"""Drop-off alerting in the worker, batch logic (pure: no Faust, no I/O).

    by-customer ──customers──► <prefix>.step-reached ──alerts──► alerts table, alerts topic,
      (P partitions)  StepReachedRouter    (P partitions)   AlertStage    webhooks

Why a topic of its own: the evaluator's state lives per (journey, step) — a handful of
keys — while observations come from every by-customer partition. So the customer
stage repartitions each observation to the partitions of the state keys it concerns
(`state_key` k for its population, k - 1 for the continuation of the step before) and
sends its partition's watermark claim (stream.eventtime.watermarks) to *every*
step-reached partition, after that partition's observations and in the same message.
Each alert partition's event time is its `Frontier` over the P by-customer partitions,
so a window is final only when every source has passed it (DESIGN.md "Drop-off alert").

Message (value; key none, partition explicit), MessagePack like the envelopes (stream.
stages.envelopes: `encode`; JSON of format 2, `{"v": 2, ...}`, is still read):

    {"v": 3, "o": [[journey, instance_id, step_index, reached_at_ms, channel(, as_of)], ...],
             "w": claims}

Claims are sent when they move a window boundary the alert rules care about
(`final_before` of some rule) or change idleness, which is exact: the evaluator only
ever uses final_before(min watermark) = min(final_before(watermark)); and at least
every CLAIM_REFRESH_MS, so an alert partition that restarted learns them again.

Scale: alert work is spread by state key (sum of non-goal steps over definitions, 8
for the default file), at most P ways; a step's population is a few hundred instances
per window, so one partition's worth is cheap. Claims cost P messages per window
boundary (or refresh) per source partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from journeys.definitions import JourneyDefinition
from stream.engine.alert_entries import EntryStore, MemoryEntryStore
from stream.engine.alert_verdict import AlertRecord, final_before
from stream.engine.dropoff import DropoffEvaluator, StepAlertState, state_key
from stream.engine.outputs import StepReached
from stream.eventtime.watermarks import (
    CLAIM_REFRESH_MS,
    NO_WATERMARK,
    Claim,
    Frontier,
    decode_claims,
    encode_claims,
)
from stream.stages.alert_chunks import ChunkedEntries
from stream.stages.envelopes import FORMAT, decode_body, encode, partition_for

MAX_OBSERVATIONS = 5000  # per message (~100 bytes each)

GetState = Callable[[bytes], bytes | None]
Reached = Mapping[int, tuple[Sequence[StepReached], Claim]]
"""by-customer partition -> (observations settled in a batch, its claim after it)."""

StateKey = tuple[str, int]


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
    """Customer-stage side: a batch's observations and claims -> step-reached messages.

    Call `route`, send every message, and only once all are acknowledged `confirm` the
    returned claims (a failed send then re-sends them with the retried batch).
    """

    def __init__(self, definitions: Sequence[JourneyDefinition], partitions: int) -> None:
        self.keys = _Keys(definitions, partitions)
        # source -> (quantized watermark, idle) last sent, and when (wall ms)
        self._sent: dict[int, tuple[tuple[int, ...], bool, int]] = {}

    def route(self, reached: Reached, wall_ms: int = 0) -> tuple[list[tuple[int, bytes]],
                                                                  dict[int, Any]]:
        """(messages as (step-reached partition, value), claims to confirm)."""
        keys = self.keys
        obs_for: dict[int, list[list[Any]]] = {}
        claims: list[Claim] = []
        confirm: dict[int, Any] = {}
        for p, (observations, claim) in sorted(reached.items()):
            for o in observations:
                row = [o.journey, o.instance_id, o.step_index, o.reached_at_ms, o.channel]
                if o.as_of is not None:
                    row.append(o.as_of)
                for q in {keys.partition[k] for k in keys.keys_for(o)}:
                    obs_for.setdefault(q, []).append(row)
            quant = keys.quantize(claim.mark)
            sent = self._sent.get(p)
            if (sent is None or sent[:2] != (quant, claim.idle)
                    or wall_ms - sent[2] >= CLAIM_REFRESH_MS):
                claims.append(Claim(p, max(claim.mark, NO_WATERMARK), claim.idle))
                confirm[p] = (quant, claim.idle, wall_ms)
        encoded = encode_claims(keys.partitions, claims) if claims else None
        messages: list[tuple[int, bytes]] = []
        targets = range(keys.partitions) if claims else sorted(obs_for)
        for q in targets:
            rows = obs_for.get(q, [])
            chunks = [rows[i:i + MAX_OBSERVATIONS]
                      for i in range(0, len(rows), MAX_OBSERVATIONS)] or [[]]
            for n, chunk in enumerate(chunks):
                body: dict[str, Any] = {"v": FORMAT, "o": chunk}
                if n == len(chunks) - 1 and encoded is not None:
                    body["w"] = encoded  # after this source's observations, never before
                messages.append((q, encode(body)))
        return messages, confirm

    def confirm(self, sent: Mapping[int, Any]) -> None:
        self._sent.update(sent)


def decode(value: bytes | None) -> dict[str, Any] | None:
    """A step-reached message of either wire format, or None (counted by the caller)."""
    return decode_body(value)


@dataclass
class AlertBatch:
    """What one batch of step-reached messages produced: emit `records`, then store
    `states` (table key -> (changelog partition, value)), then commit."""

    records: list[AlertRecord] = field(default_factory=list)
    states: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    observations: int = 0
    late: int = 0
    undecodable: int = 0
    watermarks: dict[int, int] = field(default_factory=dict)  # alert partition -> used


class AlertStage:
    """Alert-partition side: per-partition frontiers and per-key evaluator states,
    parsed once and cached; the table (changelog) holds the states' bytes. The states'
    open entries are in `entries` (a dict each, or a local RocksDB index: stream.engine.
    alert_entries), filled from the table whenever a key is (re)read."""

    def __init__(self, definitions: Sequence[JourneyDefinition], partitions: int,
                 entries: EntryStore | None = None) -> None:
        self.keys = _Keys(definitions, partitions)
        self.sources = partitions  # by-customer partitions (same count as ours)
        self.entries: EntryStore = MemoryEntryStore() if entries is None else entries
        self._states: dict[StateKey, StepAlertState] = {}
        self._entries: dict[StateKey, ChunkedEntries] = {}  # the states' entries, chunked
        self.frontiers: dict[int, Frontier] = {}

    def forget(self) -> None:
        """After a rebalance/recovery: re-read states from the table when next needed;
        frontiers start again from the claims that keep coming."""
        self.drop_cached_states()
        self.frontiers.clear()

    def drop_cached_states(self) -> None:
        """After a `prepare` that raised: the cached states may hold its partial
        changes, which were never stored; they are re-read from the table."""
        self._states.clear()
        self._entries.clear()
        self.entries.reset()

    def frontier(self, partition: int) -> Frontier:
        f = self.frontiers.get(partition)
        if f is None:
            f = self.frontiers[partition] = Frontier(self.sources)
        return f

    def state(self, key: StateKey, get: GetState, watermark: int) -> StepAlertState:
        st = self._states.get(key)
        if st is None:
            d, kb = self.keys.definitions[key[0]], key_bytes(key)
            head = get(kb)
            entries = ChunkedEntries(self.entries.open(state_key(*key)))
            st, kept = StepAlertState.restore_head(d, key[1], head, watermark, entries)
            entries.load(head, kept, get, kb)  # one entry record at a time into the index
            self._entries[key] = entries
            self._states[key] = st
        return st

    def records(self, key: StateKey) -> dict[bytes, tuple[int, bytes | None]]:
        """The table records of a key's state: its head, the entry chunks it changed
        since stored, tombstones of what they replace (stream.stages.alert_chunks)."""
        return self._entries[key].records(self._states[key], key_bytes(key),
                                          self.keys.partition[key])

    def prepare(self, records: Iterable[tuple[int, bytes | None]], get: GetState) -> AlertBatch:
        """Apply a batch of (partition, value): all observations first, then the
        claims, then finalize whatever windows the partitions' frontiers passed."""
        batch = AlertBatch()
        keys = self.keys
        touched: set[StateKey] = set()
        parts: set[int] = set()
        for q, value in records:
            body = decode(value)
            if body is None:
                batch.undecodable += 1
                continue
            parts.add(q)
            wm = self.frontier(q).watermark
            for row in body.get("o", ()):
                obs = StepReached(row[0], row[1], int(row[2]), int(row[3]), row[4],
                                  int(row[5]) if len(row) > 5 else None)
                for key in keys.keys_for(obs):
                    if keys.partition[key] != q:
                        continue
                    batch.observations += 1
                    if not self.state(key, get, wm).observe(obs):
                        batch.late += 1
                    touched.add(key)  # the state or its late count changed
            if "w" in body:
                count, claims = decode_claims(body["w"])
                self.frontier(q).update(count, claims)
        for q in sorted(parts):
            wm = self.frontier(q).watermark
            batch.watermarks[q] = wm
            for key in keys.in_partition.get(q, ()):
                st = self.state(key, get, wm)
                before = st.final_before
                d = keys.definitions[key[0]]
                batch.records.extend(st.advance(d.alert, wm, d.version))
                if st.final_before != before:
                    touched.add(key)
        for key in touched:
            batch.states.update(self.records(key))
        batch.records.sort(key=lambda r: (r.window_start_ms, r.journey, r.step_index))
        return batch
