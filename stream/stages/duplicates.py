"""The rule for copies of one event id at a customer (docs/semantics.md "Ordering and
duplicates"), pure.

The first copy to reach the customer's state wins; both sessions and journeys see
only it. A later copy is dropped before either engine sees it, so the two always agree
(each engine used to apply its own check over its own memory: a copy could count in a
session and not in a journey). The first copy's content is known while it is in the
customer's journey tail (within the allowed lateness of the customer's event time): a
copy that differs there in time, type, channel, context or journey value is a
*conflicting duplicate*, dead-lettered by the customer stage with both versions; an
identical one is an ordinary
duplicate (a retry). Past the tail, a copy whose first is still in an open session is
dropped as a duplicate without comparison. Later than that, a copy is not recognised.

The handover route (`handed_over`): a linked device hands its events (journeys, with
content) and open sessions (ids with times) to the customer; at that moment (the
customer settled exactly to the link time) a handed-over copy of an id the customer
holds already reached it second, so the customer's copy wins and the handed-over one is
taken out of both the journey events and the released sessions; compared as on the
direct route when both contents are known.

Not a function of the input yet (docs/reliability.md "Not guaranteed yet"): copies sent
with different identity fields reach the customer in either order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

# (occurred_at, event_id, type, channel, context or None[, journey value or None])
TailEvent = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Conflict:
    """A copy whose content differs from the first copy of its event id."""

    customer: str
    first: TailEvent
    copy: TailEvent
    partition: int  # where the copy was read (the by-customer topic)
    offset: int  # -1: it came in the handover of `device`
    device: str | None = None

    def where(self, topic: str) -> str:
        """Where the copy came from, for the dead letter's `error`."""
        if self.device is not None:
            return (f"handed over by linked device {self.device!r} to customer partition "
                    f"{self.partition}")
        return f"read at {topic}[{self.partition}]@{self.offset}"

    def reason(self) -> str:
        f, c = self.first, self.copy
        diff = [name for name, a, b in (("occurred_at", f[0], c[0]), ("type", f[2], c[2]),
                                        ("channel", f[3], c[3]), ("context", f[4], c[4]),
                                        ("properties.value", _value(f), _value(c)))
                if a != b]
        return f"conflicting_duplicate: event_id {c[1]!r} first seen with other {', '.join(diff)}"

    def original(self) -> bytes:
        """The copy as a JSON object (the stage only has these fields), and the first."""
        def obj(e: TailEvent) -> dict[str, Any]:
            return {"event_id": e[1], "occurred_at": e[0], "type": e[2], "channel": e[3],
                    "context": e[4], "customer": self.customer,
                    **({"properties": {"value": _value(e)}} if _value(e) is not None else {})}
        return orjson.dumps({**obj(self.copy), "first_copy": obj(self.first)})


E = TypeVar("E", bound=tuple[Any, ...])


@dataclass(slots=True)
class Screened(Generic[E]):
    kept: list[E]
    duplicates: int
    conflicts: list[Conflict]


def first_copies(customer: str, tail: Iterable[TailEvent], session_ids: set[str],
                 events: Sequence[E], offsets: Sequence[tuple[int, int]]) -> Screened[E]:
    """Keep each event id's first copy; `events` in log order with their (partition,
    offset); `tail` and `session_ids` are what the customer's state holds already."""
    known: dict[str, TailEvent | None] = dict.fromkeys(session_ids)
    known.update((e[1], e) for e in tail)
    out: Screened[E] = Screened([], 0, [])
    for ev, (partition, offset) in zip(events, offsets, strict=True):
        eid = ev[1]
        if eid not in known:
            known[eid] = ev
            out.kept.append(ev)
            continue
        first = known[eid]
        if first is None or _same(first, ev):
            out.duplicates += 1
        else:
            out.conflicts.append(Conflict(customer, first, ev, partition, offset))
    return out


@dataclass(slots=True)
class HandedOver:
    """`handed_over`'s answer: the journey events to absorb, what was left out."""

    kept: list[TailEvent]
    left_out: set[str]  # ids the released sessions must drop too
    duplicates: int
    conflicts: list[Conflict]


def handed_over(customer: str, device: str, partition: int, tail: Iterable[TailEvent],
                settled: Iterable[TailEvent], session_ids: set[str],
                events: Sequence[TailEvent]) -> HandedOver:
    """Screen a device's handed-over journey events against what the customer holds:
    its tail, its open runs' settled path events (`settled`) and its open sessions' ids
    (content unknown: dropped without comparison, as on the direct route). The
    customer's copy reached it first and wins. A run's path keeps the context only of
    the event that opened it, and either side's copy may come from one, so the context
    is compared only where both copies carry one."""
    known: dict[str, TailEvent | None] = dict.fromkeys(session_ids)
    known.update((e[1], e) for e in settled)
    known.update((e[1], e) for e in tail)
    out = HandedOver([], set(), 0, [])
    for ev in events:
        eid = ev[1]
        if eid not in known:
            out.kept.append(ev)
            continue
        out.left_out.add(eid)
        first = known[eid]
        if first is None:
            out.duplicates += 1
            continue
        if first[4] is None or ev[4] is None:  # one context not kept: not compared
            ctx = first[4] or ev[4]
            first, ev = (*first[:4], ctx, *first[5:]), (*ev[:4], ctx, *ev[5:])
        if _same(first, ev):
            out.duplicates += 1
        else:
            out.conflicts.append(Conflict(customer, first, ev, partition, -1, device))
    return out


def _value(e: TailEvent) -> float | None:
    return e[5] if len(e) > 5 else None


def _same(a: TailEvent, b: TailEvent) -> bool:
    return (a[0] == b[0] and a[2] == b[2] and a[3] == b[3] and (a[4] or None) == (b[4] or None)
            and _value(a) == _value(b))
