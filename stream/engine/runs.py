"""The journey state machine (DESIGN.md "Journey instance", "Detours") for one definition.

`feed` is the reference walk (tests/reference/journeys_ref.py) turned inside out: it
takes one event at a time and the currently open instance, so the engine can resume it
from a stored checkpoint instead of rescanning a customer's history. It must stay
step-for-step equal to the reference; the property tests hold it to that.

A run's path keeps each event's id: identity stitching hands an anonymous visitor's
open journeys over to a customer, and merging them needs the reference order (time,
then event id), duplicate detection and the opening event id (instance ids hash it).

The path is capped (`Spec.cap`, setting `path_cap`; docs/semantics.md "Capped paths"):
a run keeps its first `cap` events verbatim and beyond them only what the figures need,
so one customer's state stays bounded however long a journey runs (measured before:
~210k events in one journey made an 8 MiB state record and a crash loop). Beyond the
cap: the event count, the last event (`_step` compares with it: channel switch, loop),
reached steps as (time, channel), the furthest step, distinct channels, and detours as
counts per (kind, step, channel). Stored (`encode_run`): an uncapped run as its path
(steps and detours are replayed on decode, which keeps the bytes small), a capped one
with that summary as well (no replay of what was dropped).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from journeys.definitions import JourneyDefinition
from journeys.settings import DEFAULT_PATH_CAP

DETOUR_KINDS: tuple[str, ...] = ("backtrack", "loop", "off_path", "channel_switch")
BACKTRACK, LOOP, OFF_PATH, CHANNEL_SWITCH = range(4)
PATH_CAP = DEFAULT_PATH_CAP  # the `path_cap` setting's default

# tail events are (occurred_at, event_id, type, channel, entry context or None[, value]):
# sorted = reference order (event ids are unique in a tail, so the dict is never compared);
# value: the event's journey value or None (docs/semantics.md "Journey value")
TailEvent = tuple[Any, ...]


def instance_id(journey: str, customer: str, opening_event_id: str) -> str:
    """Deterministic id (same as the reference): replays give the same instance ids."""
    raw = f"{journey}\x1f{customer}\x1f{opening_event_id}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


class Spec:
    """A definition compiled for the hot loop (dict lookups instead of tuple.index),
    with the path cap (events kept verbatim per run)."""

    __slots__ = ("abandon", "cap", "entry", "goal", "index", "name", "off_path", "window")

    def __init__(self, d: JourneyDefinition, cap: int = PATH_CAP) -> None:
        self.name = d.name
        self.index = {s: i for i, s in enumerate(d.steps)}
        self.goal = len(d.steps) - 1
        self.entry = d.steps[0]
        self.off_path = frozenset(d.off_path) if d.off_path is not None else None
        self.abandon = d.abandon_after_ms
        self.window = d.conversion_window_ms
        self.cap = max(1, cap)


DetourKey = tuple[int, int, str]  # (kind code, step index, channel of the causing event)


@dataclass(slots=True)
class Run:
    """One journey instance. Lists hold small lists so they encode to JSON unchanged.

    path: the first `Spec.cap` events, [t, event_id, type, channel]; n: events in all;
    last: the last event; reached[s]: [time, channel] of the event that first reached
    step s; detours: [kind code, step index, path position] of detours caused by kept
    events; more: detours caused by events beyond the cap, counted per (kind, step,
    channel); seen: channels first seen beyond the cap; ctx: the opening event's
    context (report breakdowns). value: the journey value, that of the latest event
    carrying one (docs/semantics.md "Journey value"), value_eid that event's id, values
    the values of kept path events (a merge replays them: stream.engine.merge).
    """

    iid: str
    opened: int
    last_t: int
    furthest: int
    path: list[list[Any]]
    reached: list[list[Any]]
    detours: list[list[int]]
    status: str = "open"
    closed_at: int | None = None
    ctx: dict[str, Any] | None = None
    n: int = 1
    last: list[Any] = field(default_factory=list)
    more: dict[DetourKey, int] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    value: float | None = None
    value_eid: str = ""
    values: dict[str, float] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        """Events were dropped from the path (it holds the first ones only)."""
        return self.n > len(self.path)

    def deadline(self, d: Spec) -> int:
        idle, window = self.last_t + d.abandon, self.opened + d.window
        return idle if idle < window else window

    def copy(self) -> Run:
        # inner lists are never mutated in place, so a shallow copy of each list is enough
        return Run(self.iid, self.opened, self.last_t, self.furthest, list(self.path),
                   list(self.reached), list(self.detours), self.status, self.closed_at,
                   self.ctx, self.n, self.last, dict(self.more), list(self.seen),
                   self.value, self.value_eid, dict(self.values) if self.values else {})

    def more_rows(self) -> list[list[Any]]:
        """`more` as sorted [kind, step, channel, count] rows (stored form, rows)."""
        more = self.more
        return [[k, s, ch, c] for (k, s, ch), c in sorted(more.items())] if more else []

    def digest(self) -> int:
        """Fingerprint of everything a row shows, to emit an upsert only on change."""
        body = orjson.dumps([self.path, self.detours, self.status, self.closed_at, self.n,
                             self.last, self.more_rows(), self.seen])
        return int.from_bytes(hashlib.blake2b(body, digest_size=6).digest(), "big")


def new_run(d: Spec, customer: str, ev: TailEvent, iid: str | None = None) -> Run:
    """The run an entry event opens (`iid`: its id when known, e.g. decoding)."""
    t, eid, channel = ev[0], ev[1], ev[3]
    first = [t, eid, ev[2], channel]
    run = Run(instance_id(d.name, customer, eid) if iid is None else iid, t, t, 0, [first],
              [[t, channel]], [], "open", None, ev[4] if len(ev) > 4 else None, 1, first,
              {}, [])
    if len(ev) > 5 and ev[5] is not None:
        take_value(run, eid, ev[5])
    return run


def take_value(run: Run, eid: str, value: float) -> None:
    """The event `eid`, just appended to the run, carries a journey value: it is the
    run's now (the latest event with one wins); kept with the path event if kept."""
    run.value, run.value_eid = value, eid
    if run.path[-1][1] == eid:
        run.values[eid] = value


def _step(d: Spec, cur: Run, t: int, eid: str, etype: str, channel: str) -> int:
    """Append one event to an open run (detours, reached steps); returns its step index.

    The hot loop of the engine (every event, every definition, and every path event of
    a run decoded from its stored form): one dict lookup, no allocation beyond the path
    entry and the detours it causes."""
    prev = cur.last
    step = cur.furthest
    idx = d.index.get(etype, -1)
    if idx < 0:
        off = d.off_path
        kind = OFF_PATH if off is None or etype in off else -1
    elif idx < step:
        kind = BACKTRACK
    elif idx == step:
        # the furthest step's type is always on the path already (it was reached by an
        # event of that type), so the reference's "seen earlier" test reduces to this
        kind = LOOP if prev[2] != etype else -1
    else:
        kind = -1
        if idx == step + 1:
            cur.reached.append([t, channel])
        else:
            cur.reached.extend([[t, channel]] * (idx - step))
        cur.furthest = idx
    ev = [t, eid, etype, channel]
    pos = cur.n  # this event's position in the instance
    path = cur.path
    if pos == len(path) and pos < d.cap:
        if channel != prev[3]:
            cur.detours.append([CHANNEL_SWITCH, step, pos])
        if kind >= 0:
            cur.detours.append([kind, step, pos])
        path.append(ev)
    else:
        more = cur.more
        if channel != prev[3]:
            key = (CHANNEL_SWITCH, step, channel)
            more[key] = more.get(key, 0) + 1
        if kind >= 0:
            key = (kind, step, channel)
            more[key] = more.get(key, 0) + 1
        if channel not in cur.seen:
            cur.seen.append(channel)
    cur.last = ev
    cur.n = pos + 1
    cur.last_t = t
    return idx


def feed(
    d: Spec, customer: str, cur: Run | None, ev: TailEvent
) -> tuple[Run | None, Run | None, Run | None]:
    """Apply one event in reference order. Returns (open run, run closed, run opened).

    A closed run is abandoned (the event is at/after its deadline) or converted (this
    event is the goal); "opened" is the run this event opened, if any. Steps are
    distinct, so one event never both opens and converts a run.
    """
    t = ev[0]
    closed: Run | None = None
    if cur is not None:
        deadline = cur.deadline(d)
        if t >= deadline:
            cur.status, cur.closed_at = "abandoned", deadline
            closed, cur = cur, None
    if cur is None:
        if ev[2] != d.entry:
            return None, closed, None
        cur = new_run(d, customer, ev)
        return cur, closed, cur
    eid = ev[1]
    idx = _step(d, cur, t, eid, ev[2], ev[3])
    if len(ev) > 5 and ev[5] is not None:
        take_value(cur, eid, ev[5])
    if idx == d.goal:
        cur.status, cur.closed_at = "converted", t
        return None, cur, None
    return cur, closed, None


def path_events(r: Run) -> list[TailEvent]:
    """The run's known events as tail events (the opening one with its context): the
    kept path, and the last event when the path is capped."""
    vals = r.values
    out: list[TailEvent] = [(p[0], p[1], p[2], p[3], None, vals.get(p[1])) for p in r.path]
    if out:
        first = r.path[0]
        out[0] = (first[0], first[1], first[2], first[3], r.ctx, vals.get(first[1]))
    if r.truncated:
        last = r.last
        out.append((last[0], last[1], last[2], last[3], None,
                    r.value if r.value_eid == last[1] else None))
    return out


def encode_run(r: Run) -> list[Any]:
    """Compact JSON form of an open run: id, opening time, path with relative times;
    a capped run also its summary (module docstring)."""
    o = r.opened
    out: list[Any] = [r.iid, o, [[t - o, eid, ty, ch] for t, eid, ty, ch in r.path], r.ctx]
    if r.truncated:
        lt, leid, lty, lch = r.last
        out.append({"n": r.n, "l": [lt - o, leid, lty, lch], "f": r.furthest,
                    "r": [[t - o, ch] for t, ch in r.reached], "d": r.detours,
                    "m": r.more_rows(), "c": r.seen})
    if r.value is not None:  # (an older stored run has no element 5: no value)
        if len(out) == 4:
            out.append(None)
        vals = r.values  # kept path events' values, by path position
        out.append([r.value, r.value_eid,
                    [[i, vals[p[1]]] for i, p in enumerate(r.path) if p[1] in vals]])
    return out


def decode_run(obj: list[Any], d: Spec) -> Run:
    """Rebuild a run from its stored form: an uncapped path is replayed (under the
    current cap), a capped run is restored from its summary. Deadlines and the goal
    are not applied: the run was open when stored (if the definition changed since, it
    stays open until settled)."""
    iid, o, path = obj[0], obj[1], obj[2]
    t0, eid0, ty0, ch0 = path[0]
    run = new_run(d, "", (o + t0, eid0, ty0, ch0, obj[3]), iid)
    summary = obj[4] if len(obj) > 4 else None
    if len(obj) > 5:
        run.value, run.value_eid = obj[5][0], obj[5][1]
        run.values = {path[i][1]: v for i, v in obj[5][2]}
    if summary is not None and summary["f"] <= d.goal:
        run.path = [[o + t, eid, ty, ch] for t, eid, ty, ch in path]
        lt, leid, lty, lch = summary["l"]
        run.last, run.last_t, run.n = [o + lt, leid, lty, lch], o + lt, summary["n"]
        run.furthest = summary["f"]
        run.reached = [[o + t, ch] for t, ch in summary["r"]]
        run.detours = summary["d"]
        run.more = {(k, s, ch): c for k, s, ch, c in summary["m"]}
        run.seen = summary["c"]
        return run
    for t, eid, ty, ch in path[1:]:  # (a summary of a shorter, older definition: replay)
        _step(d, run, o + t, eid, ty, ch)
    return run
