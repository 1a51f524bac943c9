"""Batch logic of the identity stage (stitching, DESIGN.md "Touchpoint event"), pure.

Input: by-identity envelopes, partitioned by anonymous_id (customer_id when there is
no usable anonymous id), so every event of one device meets the device's alias entry
in one partition. For each event, in log order:

- an event read before (same raw partition, offset not above the last applied one) is
  a re-delivery from the validate stage (a crash or rebalance there) and is skipped;
- an event carrying both usable ids links anonymous_id -> customer_id if the device
  has no link yet (first link wins, stream.engine.identity); the link is recorded (who,
  from which event, and its event time: the earliest linking event to that customer,
  whatever order they are read in) and a *link* item is sent to the device's
  by-customer partition, so the customer stage hands the device's non-final sessions
  and journeys over to the customer once the device's event time reaches the link
  (retroactive stitching), plus a *hold* to the customer's partition, before the
  customer's events, so the customer waits for that handover;
- the event is re-keyed and forwarded to that key's by-customer partition, tagged with
  its position in this partition: customer_id if usable; else, for a linked device,
  the customer when the event is at or after the link's time and the device itself
  when before it; else the anonymous id itself.

Routing by event time, not by "is there an alias now", makes the split at the link the
same in every arrival order: the device sees all its events before the link, whenever
they are read, and decides what was final then; the customer gets the rest. It also
sends a re-processed record (after a crash between writing its outputs and committing
it) where it went the first time, so the customer stage's position check recognises
it (if the link time moved back meanwhile, the copies meet at the customer, which
counts an event id once).

A `forget` control envelope (journeys.control) drops the links of the named devices to
the named customer and passes a forget item for every named key on to its by-customer
partition, after what this batch forwarded before it.

After the batch, each by-identity partition's frontier (the minimum over the raw
partitions' claims it received) goes to every by-customer partition as this stage's
claim (stream.eventtime.watermarks).

The alias map lives in a changelogged Faust table keyed by anonymous id (written with
the by-identity partition of the key, so recovery brings it back with the partition),
next to one record per partition with the last raw offset applied per raw partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.engine.identity import MergeRecord, is_junk_id
from stream.eventtime.watermarks import NO_WATERMARK, Frontier, decode_claims, encode_claims
from stream.stages.envelopes import EnvelopeBuilder, decode, partition_for

GetValue = Callable[[bytes], bytes | None]

ALIAS_FORMAT = b"\x01"
APPLIED_PREFIX = b"\x00applied:"  # table key: raw offsets applied by one partition
Position = tuple[int, int]  # (offset of the record in its partition, index in the record)
NOWHERE: Position = (-1, -1)  # links stored before positions were (read: "always before")


@dataclass(frozen=True, slots=True)
class Alias:
    """A device's link: its customer, the earliest linking event seen for that customer
    (event time, event id), and the log position of the first one read."""

    customer: str
    linked_at: int
    event_id: str
    position: Position

    def dumps(self) -> bytes:
        return ALIAS_FORMAT + orjson.dumps([self.customer, self.linked_at, self.event_id,
                                            *self.position])

    @classmethod
    def loads(cls, data: bytes | None) -> Alias | None:
        if not data:
            return None
        if data[:1] != ALIAS_FORMAT:  # an older worker stored the customer id alone
            return cls(data.decode(), NO_WATERMARK, "", NOWHERE)
        cust, at, eid, off, idx = orjson.loads(data[1:])
        return cls(cust, int(at), eid, (int(off), int(idx)))


def applied_key(partition: int) -> bytes:
    return APPLIED_PREFIX + str(partition).encode()


@dataclass
class IdentityBatch:
    envelopes: EnvelopeBuilder = field(default_factory=EnvelopeBuilder)
    # table key -> (changelog partition, value): new aliases and applied offsets
    states: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    merges: list[MergeRecord] = field(default_factory=list)
    events: int = 0
    stitched: int = 0  # anonymous-only events attributed to a customer via an alias
    forgotten: int = 0  # links dropped by forget control envelopes
    redelivered: int = 0  # read before (validate re-delivery): skipped
    undecodable: int = 0
    watermarks: dict[int, int] = field(default_factory=dict)  # partition -> frontier


class IdentityStage:
    """Frontiers and applied offsets of the by-identity partitions this worker owns."""

    def __init__(self, partitions: int, sources: int) -> None:
        self.partitions = partitions  # by-customer partitions (where events go)
        self.sources = sources  # by-identity partitions (whose claims this stage sends)
        self.frontiers: dict[int, Frontier] = {}
        self._applied: dict[int, dict[int, int]] = {}

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """After a rebalance: drop what belongs to partitions that may have moved (the
        applied offsets are re-read from the recovered table when next needed)."""
        gone = list(self._applied) if partitions is None else list(partitions)
        for p in gone:
            self._applied.pop(p, None)
            self.frontiers.pop(p, None)

    def drop_cached_offsets(self) -> None:
        """After a `prepare` that raised: its applied offsets were never stored; they are
        re-read from the table when next needed."""
        self._applied.clear()

    def _applied_for(self, partition: int, get: GetValue) -> dict[int, int]:
        applied = self._applied.get(partition)
        if applied is None:
            raw = get(applied_key(partition))
            applied = {int(k): int(v) for k, v in orjson.loads(raw).items()} if raw else {}
            self._applied[partition] = applied
        return applied

    def prepare(self, records: Iterable[tuple[int, int, bytes | None]],
                get: GetValue) -> IdentityBatch:
        """Resolve a batch of envelopes (partition, offset, value). Nothing is stored
        here: the batch says what to write (`states`) after its messages are sent."""
        batch = IdentityBatch()
        new: dict[str, Alias] = {}
        gone: set[str] = set()  # links forgotten in this batch

        def alias(anon: str) -> Alias | None:
            if anon in gone and anon not in new:
                return None
            return new.get(anon) or Alias.loads(get(anon.encode()))

        touched: set[int] = set()
        for partition, offset, value in records:
            body = decode(value)
            if body is None:
                batch.undecodable += 1
                continue
            touched.add(partition)
            applied = self._applied_for(partition, get)
            for idx, item in enumerate(body["e"]):
                self._route(batch, partition, (offset, idx), item, applied, alias, new)
            for customer, anons in body.get("f", ()):
                self._forget(batch, customer, anons, alias, new, gone)
            if "w" in body:
                count, claims = decode_claims(body["w"])
                self.frontiers.setdefault(partition, Frontier()).update(count, claims)
        for anon in gone - set(new):
            batch.states[anon.encode()] = (partition_for(anon, self.sources), None)
        for anon, a in new.items():
            batch.states[anon.encode()] = (partition_for(anon, self.sources), a.dumps())
        claims = []
        for p in sorted(touched):
            batch.states[applied_key(p)] = (p, orjson.dumps(
                {str(s): o for s, o in sorted(self._applied[p].items())}))
            frontier = self.frontiers.setdefault(p, Frontier())
            claims.append(frontier.claim(p))
            batch.watermarks[p] = frontier.watermark
        if claims:
            batch.envelopes.claims(range(self.partitions),
                                   encode_claims(self.sources, claims))
        return batch

    def _forget(self, batch: IdentityBatch, customer: str, anons: list[str],
                alias: Callable[[str], Alias | None], new: dict[str, Alias],
                gone: set[str]) -> None:
        """Drop the devices' links to `customer` (a link to someone else stays) and pass
        the forget on for every key. A forget read again (a re-delivery) repeats this:
        a link made after it is then dropped too, as it would be by a forget sent now."""
        for anon in anons:
            known = alias(anon)
            if known is not None and known.customer == customer:
                new.pop(anon, None)
                gone.add(anon)
                batch.forgotten += 1
        for key in (customer, *anons):
            batch.envelopes.forget(partition_for(key, self.partitions), key)

    def _route(self, batch: IdentityBatch, partition: int, pos: Position, item: list[Any],
               applied: dict[int, int], alias: Callable[[str], Alias | None],
               new: dict[str, Alias]) -> None:
        eid, typ, channel, t, cust, anon, ctx, source, source_offset = item[:9]
        if source_offset <= applied.get(source, -1):
            batch.redelivered += 1
            return
        applied[source] = source_offset
        batch.events += 1
        parts = self.partitions
        cust_ok, anon_ok = not is_junk_id(cust), not is_junk_id(anon)
        known = alias(anon) if anon_ok else None
        if cust_ok and anon_ok and (
                known is None or known.position == pos or (
                    known.customer == cust and (t, eid) < (known.linked_at, known.event_id))):
            # A new link; this very link read again (outputs re-sent: idempotent); or
            # an earlier link of the device to the same customer, read later: the link
            # time moves back to it, so where the split falls does not depend on which
            # linking event was read first (the customer's hold moves back with it).
            if known is None:
                known = new[anon] = Alias(cust, t, eid, pos)
            elif known.position != pos:
                known = new[anon] = Alias(cust, t, eid, known.position)
            if known.event_id == eid:  # the merge record names the earliest link
                batch.merges.append(MergeRecord(anon, cust, t, eid, typ, channel))
            # the device's state lives in partition_for(anon): hand it over
            batch.envelopes.link(partition_for(anon, parts), anon, cust, known.linked_at)
            batch.envelopes.hold(partition_for(cust, parts), cust, anon, known.linked_at)
        if cust_ok:
            key = cust
        elif anon_ok:
            key = anon
            if known is not None and t >= known.linked_at:
                key = known.customer
                batch.stitched += 1
        else:
            return  # the validate stage never forwards these; be safe
        out = [key, eid, typ, channel, t, ctx, partition, *pos]
        if len(item) > 9:  # the event's journey value (stream.stages.envelopes)
            out.append(item[9])
        batch.envelopes.event(partition_for(key, parts), out)
