"""Reading one batch of the customer stage (stream.stages.customers): its envelopes
decoded into holds, new events, links, forgets, handovers and claims, in log order.

Why a module of its own: this is where a batch meets the envelopes item by item, and
where re-delivered records and events (input positions, stream.stages.customer_state)
and late events are sorted out before anything is applied; the stage then applies what
it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stream.engine.journey_state import CustomerJourneys
from stream.eventtime.watermarks import decode_claims
from stream.stages.customer_batch import CustomerBatch, Ev
from stream.stages.customer_progress import PartitionProgress
from stream.stages.customer_state import RECORDS, CustomerValue, CustomerWork
from stream.stages.envelopes import decode
from stream.stages.validate import LateEvent

Record = tuple[int, int, bytes | None]  # (partition, offset, value)
Load = Callable[[int, str], CustomerWork]  # (partition, key) -> its state, loaded once


@dataclass
class BatchInput:
    """A batch's records sorted by kind, in log order."""

    groups: dict[tuple[int, str], list[Ev]] = field(default_factory=dict)
    offsets: dict[tuple[int, str], list[tuple[int, int]]] = field(default_factory=dict)
    handovers: list[tuple[int, list[Any]]] = field(default_factory=list)
    partitions: set[int] = field(default_factory=set)


def read_records(records: Iterable[Record], load: Load, batch: CustomerBatch, wall_ms: int,
                 lane: int, *, topic: str,
                 progress_for: Callable[[int], PartitionProgress]) -> BatchInput:
    """Decode the records: holds, new events (re-delivered and late ones sorted out),
    links, handovers, claims."""
    inp = BatchInput()
    fresh_records: dict[tuple[str, int], bool] = {}

    def fresh(partition: int, key: str, offset: int) -> bool:
        """Whether this record's items for `key` are new (not a re-read record)."""
        k = (key, offset)
        if k not in fresh_records:
            v = load(partition, key).value
            v.touch(offset, lane)
            fresh_records[k] = v.is_new_record(offset, lane)
            if not fresh_records[k]:
                batch.redelivered += 1
        return fresh_records[k]

    for partition, offset, value in records:
        if lane == RECORDS:
            prog = progress_for(partition)
            prog.read_to = max(prog.read_to, offset)
        body = decode(value)
        if body is None:
            batch.undecodable += 1
            continue
        inp.partitions.add(partition)
        for cust, anon, at in body.get("p", ()):  # before the customer's events
            if fresh(partition, cust, offset) and load(
                    partition, cust).value.journeys.wait_for(anon, at, wall_ms):
                batch.held += 1
        for item in body["e"]:
            key, eid, typ, channel, t, ctx, source, src_off, idx = item[:9]
            batch.events += 1
            v = load(partition, key).value
            v.touch(offset, lane)
            if not v.is_new(source, (src_off, idx)):
                batch.redelivered += 1
            elif t < v.floor:
                batch.late.append(LateEvent(eid, t, v.floor, "customers", topic,
                                            partition, offset, wall_ms))
            else:
                inp.groups.setdefault((partition, key), []).append(
                    Ev(t, eid, typ, channel, ctx, item[9] if len(item) > 9 else None))
                inp.offsets.setdefault((partition, key), []).append((partition, offset))
        for anon, cust, at in body.get("m", ()):
            if fresh(partition, anon, offset):
                load(partition, anon).value.link(cust, at)
        for key in body.get("f", ()):  # after the record's events: journeys.control
            if fresh(partition, key, offset):
                forget_key(inp, batch, load(partition, key), partition, key,
                           progress_for)
        inp.handovers.extend((partition, h) for h in body.get("h", ())
                             if fresh(partition, h[1], offset))
        for source, into, name, i, n, cut in body.get("hp", ()):  # a handover's piece
            if fresh(partition, into, offset):
                item = load(partition, into).value.piece(source, name, i, n, cut)
                if item is not None:
                    inp.handovers.append((partition, item))
        if "w" in body:
            count, claims = decode_claims(body["w"])
            progress_for(partition).frontier.update(count, claims)
    return inp


def forget_key(inp: BatchInput, batch: CustomerBatch, w: CustomerWork, partition: int,
               key: str, progress_for: Callable[[int], PartitionProgress]) -> None:
    """Empty a key's state (journeys.control "forget"): what it applied so far and
    its events read earlier in this batch are gone; only its input positions stay
    (offsets, which recognise a re-delivered record) and its row version counter (rows
    of its ids written later must still outbid any written before); later events start
    afresh."""
    w.value = CustomerValue(positions=w.value.positions, gen=w.value.gen,
                            journeys=CustomerJourneys(seq=w.value.journeys.seq))
    w.expire = None
    inp.groups.pop((partition, key), None)
    inp.offsets.pop((partition, key), None)
    inp.handovers = [(p, h) for p, h in inp.handovers if h[1] != key]
    progress_for(partition).set_hold(key, None)
    batch.drop_rows_of(key)
    batch.forgotten += 1
