"""The rule for copies of one event id at a customer (docs/semantics.md "Ordering and
duplicates"), pure.

Of two copies that differ, the one of smaller `rank` wins (first in event time, ties by
content), whatever route or order brings them; both sessions and journeys see only it,
so the outcome is that of the input without the loser. Chosen before either engine sees
a copy, so the two always agree. A copy's content is known while it is in the
customer's journey tail (within the allowed lateness of the customer's event time): a
copy that differs there is a *conflicting duplicate*, the loser dead-lettered by the
customer stage with both versions; when the loser was applied already (in the tail)
the stage takes it out of the tail and of its open session (`Screened.replaced`). An
identical copy is an ordinary duplicate (a retry). Past the tail, a copy whose id is
still in an open session is dropped as a duplicate without comparison: it cannot
outrank the settled copy (`first_copies`). Later than that, a copy is not recognised.

The handover route (`handed_over`): a linked device hands its events (journeys, with
content) and open sessions (ids with times) to the customer, settled exactly to the
link time; compared with the customer's tail copy, the smaller rank wins as on the
direct route (a device copy known from its handed-over session only is earlier, so it
wins), and so it is against a customer copy settled before the link in an open run's
path when the runs can replay without it (`unsettled`). A settled customer copy they
cannot replay without (a capped run, a closed instance), or known by id only, is kept
whatever the rank: the remaining limit (docs/reliability.md "Not guaranteed yet").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import orjson

# (occurred_at, event_id, type, channel, context or None[, journey value or None])
TailEvent = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Conflict:
    """A copy (`copy`, left out) whose content differs from the kept copy of its event
    id (`first`: the one of smaller rank, or the customer's settled one: module
    docstring)."""

    customer: str
    first: TailEvent
    copy: TailEvent
    partition: int  # where the copy was read (the by-customer topic)
    offset: int  # -1: it came in the handover of `device`, or was applied before
    device: str | None = None
    # the copy left out was applied already (the customer's): the winner (`first`)
    # came later, directly or handed over by `device`, and outranks it
    replaced: bool = False

    def __post_init__(self) -> None:
        # one form whatever the route a copy came by (a read event or a tail event):
        # the tail's, a plain tuple without a trailing null value
        object.__setattr__(self, "first", _stored(self.first))
        object.__setattr__(self, "copy", _stored(self.copy))

    def where(self, topic: str) -> str:
        """Where the copy came from, for the dead letter's `error`."""
        if self.replaced:
            by = (f" handed over by linked device {self.device!r}" if self.device is not None
                  else "")
            return (f"applied earlier at customer partition {self.partition}, taken out for "
                    f"a copy that ranks first{by}")
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


def rank(e: TailEvent) -> tuple[Any, ...]:
    """Of two differing copies of one event id, the one with the smaller rank wins:
    first in event time, ties by content (type, channel, canonical context JSON, journey
    value; an absent context or value sorts first). A function of the copy alone, so the
    winner is the same whichever route brings either copy first."""
    ctx = e[4]
    value = _value(e)
    return (e[0], e[2], e[3],
            orjson.dumps(ctx, option=orjson.OPT_SORT_KEYS).decode() if ctx else "",
            (0, 0.0) if value is None else (1, value))


@dataclass(slots=True)
class Screened(Generic[E]):
    kept: list[E]
    duplicates: int
    conflicts: list[Conflict]
    # applied copies (from `tail`) that a new copy outranks: the caller takes them out
    # of the journey tail and the open sessions before applying `kept`
    replaced: list[TailEvent] = field(default_factory=list)


def first_copies(customer: str, tail: Iterable[TailEvent], session_ids: set[str],
                 events: Sequence[E], offsets: Sequence[tuple[int, int]]) -> Screened[E]:
    """Keep each event id's winning copy (`rank`); `events` in log order with their
    (partition, offset); `tail` and `session_ids` are what the customer's state holds
    already. A copy known by id only (an open session's, settled: not in the tail) is
    never outranked: the stage sorted late copies out, so a new copy is at or after the
    customer's floor (`CustomerValue.floor`, at least the journey checkpoint), and the
    settled copy before it, earlier in event time."""
    known: dict[str, TailEvent | None] = dict.fromkeys(session_ids)
    known.update((e[1], e) for e in tail)
    out: Screened[E] = Screened([], 0, [])
    kept_at: list[tuple[int, int]] = []  # (partition, offset) of each kept copy
    for ev, at in zip(events, offsets, strict=True):
        eid = ev[1]
        if eid not in known:
            known[eid] = ev
            out.kept.append(ev)
            kept_at.append(at)
            continue
        first = known[eid]
        if first is None or _same(first, ev):
            out.duplicates += 1
        elif rank(ev) < rank(first):  # the new copy wins: the one known so far loses
            known[eid] = ev
            i = next((i for i, k in enumerate(out.kept) if k[1] == eid), -1)
            if i >= 0:  # kept from this batch: replaced in place
                out.conflicts.append(Conflict(customer, ev, first, *kept_at[i]))
                out.kept[i], kept_at[i] = ev, at
            else:  # applied already: taken out of the state by the caller
                out.replaced.append(first)
                out.conflicts.append(Conflict(customer, ev, first, at[0], -1,
                                              replaced=True))
                out.kept.append(ev)
                kept_at.append(at)
        else:
            out.conflicts.append(Conflict(customer, first, ev, *at))
    out.conflicts = _final_winners(out.conflicts, known)
    return out


def _final_winners(conflicts: list[Conflict],
                   known: dict[str, Any]) -> list[Conflict]:
    """Each dead letter names the id's final winner (a third copy may outrank the one
    that beat an earlier copy)."""
    return [c if _stored(known[c.copy[1]]) == c.first else replace(c, first=known[c.copy[1]])
            for c in conflicts]


@dataclass(slots=True)
class HandedOver:
    """`handed_over`'s answer: the journey events to absorb, what was left out."""

    kept: list[TailEvent]
    left_out: set[str]  # ids the released sessions must drop too
    duplicates: int
    conflicts: list[Conflict]
    # the customer's copies in its tail that a handed-over copy outranks: taken out of
    # its tail and open sessions before the absorb (the handed-over copy stays)
    replaced: list[TailEvent] = field(default_factory=list)
    # the customer's settled copies (in open runs' paths) that a handed-over copy
    # outranks: left out of the runs' replay and taken out of its open sessions
    unsettled: list[TailEvent] = field(default_factory=list)


def handed_over(customer: str, device: str, partition: int, tail: Iterable[TailEvent],
                settled: Iterable[TailEvent], session_ids: set[str],
                events: Sequence[TailEvent],
                session_events: Iterable[tuple[int, str, str]] = (),
                replaceable: Collection[str] = ()) -> HandedOver:
    """Screen a device's handed-over journey events against what the customer holds:
    its tail, its open runs' settled path events (`settled`) and its open sessions' ids
    (content unknown: dropped without comparison, as on the direct route). The copy of
    smaller `rank` wins when the customer's is in its tail, and when it is settled in
    an open run's path and `replaceable` names it (the stage's word that the runs can
    replay without it and its open session can drop it: `unsettled`). Other settled
    customer copies (in a capped run or a closed instance too, or known by id only) are
    kept whatever the rank (the remaining limit, docs/reliability.md "Not guaranteed
    yet"). A run's path keeps the context only of the event that opened it, and either
    side's copy may come from one, so the context is compared only where both copies
    carry one.

    `session_events`: (time, id, channel) of the device's handed-over open sessions. A
    device copy there and not in `events` (in no open journey of the device: settled
    there, so before the link time) whose customer copy is in the tail (at or after
    the link time) is earlier, so it wins whatever its content: the customer's copy
    is replaced, and the dead letter's winner shows the device copy's time, id and
    channel only (its type is not handed over: None)."""
    tail_map = {e[1]: e for e in tail}
    known: dict[str, TailEvent | None] = dict.fromkeys(session_ids)
    settled_map = {e[1]: e for e in settled}
    known.update(settled_map)
    known.update(tail_map)
    out = HandedOver([], set(), 0, [])
    for ev in events:
        eid = ev[1]
        if eid not in known:
            out.kept.append(ev)
            continue
        first, orig = known[eid], ev
        if first is None:
            out.left_out.add(eid)
            out.duplicates += 1
            continue
        if first[4] is None or ev[4] is None:  # one context not kept: not compared
            ctx = first[4] or ev[4]
            first, ev = (*first[:4], ctx, *first[5:]), (*ev[:4], ctx, *ev[5:])
        if _same(first, ev):
            out.left_out.add(eid)
            out.duplicates += 1
        elif tail_map.get(eid) is known[eid] and rank(ev) < rank(first):
            mine = tail_map[eid]  # the customer's copy (its own context) loses
            out.replaced.append(mine)
            out.kept.append(orig)
            known[eid] = orig
            out.conflicts.append(Conflict(customer, orig, mine, partition, -1, device,
                                          replaced=True))
        elif (eid in replaceable and eid not in tail_map and settled_map.get(eid) is not None
              and rank(ev) < rank(first)):
            mine = settled_map[eid]  # settled, yet the runs can replay without it
            out.unsettled.append(mine)
            out.kept.append(orig)
            known[eid] = orig
            out.conflicts.append(Conflict(customer, orig, mine, partition, -1, device,
                                          replaced=True))
        else:
            out.left_out.add(eid)
            out.conflicts.append(Conflict(customer, first, ev, partition, -1, device))
    journey_ids = {e[1] for e in events}
    for t, eid, channel in session_events:
        cust_copy = tail_map.get(eid)
        # settled at the device (t < link time <= the customer's tail): earlier (the
        # time check only guards that reasoning)
        if cust_copy is None or eid in journey_ids or eid in out.left_out or t >= cust_copy[0]:
            continue
        out.replaced.append(cust_copy)
        out.conflicts.append(Conflict(customer, (t, eid, None, channel, None), cust_copy,
                                      partition, -1, device, replaced=True))
    return out


def _stored(e: TailEvent) -> TailEvent:
    return tuple(e[:5]) if _value(e) is None else tuple(e)


def _value(e: TailEvent) -> float | None:
    return e[5] if len(e) > 5 else None


def _same(a: TailEvent, b: TailEvent) -> bool:
    return (a[0] == b[0] and a[2] == b[2] and a[3] == b[3] and (a[4] or None) == (b[4] or None)
            and _value(a) == _value(b))
