"""Reference journey semantics (DESIGN.md "Semantics"), computed in batch over known events.

Input events are already resolved to a customer key (identity stitching is separate).
Interpretations the DESIGN leaves open, fixed here and documented in docs/semantics.md:
- every detour's `step` is the furthest step reached just before the causing event;
- a loop needs at least one other event between the most recent earlier event of that
  step and this one (a repeated step event directly after itself is not a loop);
- when the furthest step jumps from a to b, steps a+1..b are all first reached at that
  event's time and channel (a skipped step counts as reached, as in the funnel).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from journeys.definitions import JourneyDefinition


@dataclass(frozen=True)
class Ev:
    event_id: str
    customer: str
    type: str
    channel: str
    t: int  # occurred_at, epoch ms
    value: float | None = None  # journey value (a usable properties.value)


@dataclass(frozen=True)
class Detour:
    kind: str  # backtrack | loop | off_path | channel_switch
    step: str
    channel: str
    t: int
    event_id: str


@dataclass
class Instance:
    instance_id: str
    journey: str
    customer: str
    opened_at: int
    path: list[Ev] = field(default_factory=list)
    furthest: int = 0
    reached: dict[int, tuple[int, str]] = field(default_factory=dict)  # step -> (t, channel)
    detours: list[Detour] = field(default_factory=list)
    status: str = "open"  # open | converted | abandoned
    closed_at: int | None = None
    last_t: int = 0

    def deadline(self, d: JourneyDefinition) -> int:
        return min(self.last_t + d.abandon_after_ms, self.opened_at + d.conversion_window_ms)

    @property
    def value(self) -> float | None:
        """docs/semantics.md "Journey value": the latest event of the path with one."""
        return next((e.value for e in reversed(self.path) if e.value is not None), None)

    def dropped_at(self, d: JourneyDefinition) -> str | None:
        return d.steps[self.furthest] if self.status == "abandoned" else None


def instance_id(journey: str, customer: str, opening_event_id: str) -> str:
    """Deterministic id: the same events always give the same instance ids."""
    raw = f"{journey}\x1f{customer}\x1f{opening_event_id}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


def ordered(events: Iterable[Ev]) -> list[Ev]:
    """Dedup by event_id, order by (occurred_at, event_id). Of differing copies the one
    of smaller rank is kept (docs/semantics.md "Ordering and duplicates": time, type,
    channel, then the journey value; an Ev carries no context, the next tie-break)."""
    seen: dict[str, Ev] = {}
    for e in events:
        old = seen.get(e.event_id)
        if old is None or _rank(e) < _rank(old):
            seen[e.event_id] = e
    return sorted(seen.values(), key=lambda e: (e.t, e.event_id))


def _rank(e: Ev) -> tuple[object, ...]:
    return (e.t, e.type, e.channel, (0, 0.0) if e.value is None else (1, e.value))


def journeys_for_customer(
    d: JourneyDefinition, events: Sequence[Ev], watermark: int | None
) -> list[Instance]:
    """All instances of one definition for one customer's (ordered, deduped) events.

    `watermark`: event-time progress at the end; an open instance whose deadline is at or
    before it is abandoned (closed_at = deadline). None keeps such instances open.
    """
    out: list[Instance] = []
    cur: Instance | None = None
    for e in events:
        if cur is not None and e.t >= cur.deadline(d):
            cur.status, cur.closed_at = "abandoned", cur.deadline(d)
            cur = None
        idx = d.step_index(e.type)
        if cur is None:
            if idx == 0:
                cur = Instance(instance_id(d.name, e.customer, e.event_id), d.name, e.customer, e.t)
                cur.path.append(e)
                cur.reached[0] = (e.t, e.channel)
                cur.last_t = e.t
                out.append(cur)
            continue
        prev = cur.path[-1]
        step_name = d.steps[cur.furthest]
        if e.channel != prev.channel:
            cur.detours.append(Detour("channel_switch", step_name, e.channel, e.t, e.event_id))
        if idx < 0:
            if d.off_path is None or e.type in d.off_path:
                cur.detours.append(Detour("off_path", step_name, e.channel, e.t, e.event_id))
        elif idx < cur.furthest:
            cur.detours.append(Detour("backtrack", step_name, e.channel, e.t, e.event_id))
        elif idx == cur.furthest:
            if prev.type != e.type and any(p.type == e.type for p in cur.path):
                cur.detours.append(Detour("loop", step_name, e.channel, e.t, e.event_id))
        else:
            for s in range(cur.furthest + 1, idx + 1):
                cur.reached[s] = (e.t, e.channel)
            cur.furthest = idx
        cur.path.append(e)
        cur.last_t = e.t
        if idx == len(d.steps) - 1:
            cur.status, cur.closed_at = "converted", e.t
            cur = None
    if cur is not None and watermark is not None and watermark >= cur.deadline(d):
        cur.status, cur.closed_at = "abandoned", cur.deadline(d)
    return out


def all_journeys(
    defs: Iterable[JourneyDefinition], events: Iterable[Ev], watermark: int | None
) -> list[Instance]:
    by_customer: dict[str, list[Ev]] = {}
    for e in ordered(events):
        by_customer.setdefault(e.customer, []).append(e)
    out: list[Instance] = []
    for d in defs:
        for customer in sorted(by_customer):
            out.extend(journeys_for_customer(d, by_customer[customer], watermark))
    return out


def sessions(events: Iterable[Ev], gap_ms: int) -> list[tuple[str, int, int, int]]:
    """(customer, start, end, event count) per session: split where a gap >= gap_ms."""
    by_customer: dict[str, list[Ev]] = {}
    for e in ordered(events):
        by_customer.setdefault(e.customer, []).append(e)
    out = []
    for customer, evs in sorted(by_customer.items()):
        start = end = evs[0].t
        n = 0
        for e in evs:
            if n and e.t - end >= gap_ms:
                out.append((customer, start, end, n))
                start, n = e.t, 0
            end = e.t
            n += 1
        out.append((customer, start, end, n))
    return out


def funnel(d: JourneyDefinition, instances: Iterable[Instance]) -> dict[str, int]:
    """Per step: instances whose furthest step is at or beyond it."""
    counts = dict.fromkeys(d.steps, 0)
    for inst in instances:
        if inst.journey != d.name:
            continue
        for s in range(inst.furthest + 1):
            counts[d.steps[s]] += 1
    return counts
