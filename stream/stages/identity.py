"""Batch logic of the identity stage (stitching, DESIGN.md "Touchpoint event"), pure.

Input: by-identity envelopes, partitioned by anonymous_id (customer_id when there is
no usable anonymous id), so every event of one device meets the device's alias entry
in one partition. For each event, in log order:

- an event carrying both usable ids links anonymous_id -> customer_id if the device
  has no link yet (first link wins, stream.engine.identity); the link is recorded (who, when,
  from which event) and a *link* item is sent to the device's by-customer partition,
  after the device's earlier events, so the customer stage hands the device's
  non-final sessions and journeys over to the customer (retroactive stitching), plus
  a *hold* to the customer's partition, before the customer's events, so the customer
  waits for that handover before settling anything from the link's time on;
- the event is re-keyed to its customer (customer_id, else the device's alias, else
  the anonymous id itself) and forwarded to that key's by-customer partition.

The alias map lives in a changelogged Faust table keyed by anonymous id (written with
the by-identity partition of the key, so recovery brings it back with the partition).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from stream.engine.identity import MergeRecord, is_junk_id
from stream.stages.envelopes import EnvelopeBuilder, decode, partition_for

GetAlias = Callable[[str], str | None]


@dataclass
class IdentityBatch:
    envelopes: EnvelopeBuilder = field(default_factory=EnvelopeBuilder)
    # anonymous id -> (customer id, changelog partition): new links to store
    aliases: dict[str, tuple[str, int]] = field(default_factory=dict)
    merges: list[MergeRecord] = field(default_factory=list)
    events: int = 0
    stitched: int = 0  # anonymous-only events attributed to a customer via an alias
    undecodable: int = 0


class IdentityStage:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def prepare(self, records: Iterable[tuple[int, bytes | None]],
                get_alias: GetAlias) -> IdentityBatch:
        """Resolve a batch of envelopes (partition, value). Nothing is stored here."""
        batch = IdentityBatch()
        new = batch.aliases
        parts = self.partitions

        def alias(anon: str) -> str | None:
            known = new.get(anon)
            return known[0] if known is not None else get_alias(anon)

        for partition, value in records:
            body = decode(value)
            if body is None:
                batch.undecodable += 1
                continue
            for eid, typ, channel, t, cust, anon, ctx in body["e"]:
                batch.events += 1
                cust_ok = not is_junk_id(cust)
                anon_ok = not is_junk_id(anon)
                if cust_ok and anon_ok and alias(anon) is None:
                    new[anon] = (cust, partition)
                    batch.merges.append(MergeRecord(anon, cust, t, eid, typ, channel))
                    # the device's state lives in partition_for(anon): hand it over
                    batch.envelopes.link(partition_for(anon, parts), anon, cust, t)
                    batch.envelopes.hold(partition_for(cust, parts), cust, anon, t)
                if cust_ok:
                    key = cust
                elif anon_ok:
                    key = alias(anon) or anon
                    if key != anon:
                        batch.stitched += 1
                else:
                    continue  # the validate stage never forwards these; be safe
                batch.envelopes.event(partition_for(key, parts),
                                      [key, eid, typ, channel, t, ctx])
        batch.envelopes.sort_events(4)  # resolved in log order, forwarded in time order
        return batch
