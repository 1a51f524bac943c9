"""The journey state machine (DESIGN.md "Journey instance", "Detours") for one definition.

`feed` is the reference walk (tests/reference/journeys_ref.py) turned inside out: it
takes one event at a time and the currently open instance, so the engine can resume it
from a stored checkpoint instead of rescanning a customer's history. It must stay
step-for-step equal to the reference; the property tests hold it to that.

A run's path keeps each event's id: identity stitching hands an anonymous visitor's
open journeys over to a customer, and merging them needs the reference order (time,
then event id), duplicate detection and the opening event id (instance ids hash it).
Only the path is stored (`encode_run`, times relative to the opening): furthest step,
reached steps and detours are a pure function of it and are replayed on decode, which
keeps a customer's state bytes small.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from journeys.definitions import JourneyDefinition

DETOUR_KINDS: tuple[str, ...] = ("backtrack", "loop", "off_path", "channel_switch")
BACKTRACK, LOOP, OFF_PATH, CHANNEL_SWITCH = range(4)

# tail events are (occurred_at, event_id, type, channel, entry context or None):
# sorted = reference order (event ids are unique in a tail, so the dict is never compared)
TailEvent = tuple[Any, ...]


def instance_id(journey: str, customer: str, opening_event_id: str) -> str:
    """Deterministic id (same as the reference): replays give the same instance ids."""
    raw = f"{journey}\x1f{customer}\x1f{opening_event_id}".encode()
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


class Spec:
    """A definition compiled for the hot loop (dict lookups instead of tuple.index)."""

    __slots__ = ("abandon", "goal", "index", "name", "off_path", "window")

    def __init__(self, d: JourneyDefinition) -> None:
        self.name = d.name
        self.index = {s: i for i, s in enumerate(d.steps)}
        self.goal = len(d.steps) - 1
        self.off_path = frozenset(d.off_path) if d.off_path is not None else None
        self.abandon = d.abandon_after_ms
        self.window = d.conversion_window_ms


@dataclass(slots=True)
class Run:
    """One journey instance. Lists hold small lists so they encode to JSON unchanged.

    path: [t, event_id, type, channel]; reached[s]: path position of the event that
    first reached step s; detours: [kind code, step index, path position of the causing
    event]; ctx: the opening event's context (report breakdowns).
    """

    iid: str
    opened: int
    last_t: int
    furthest: int
    path: list[list[Any]]
    reached: list[int]
    detours: list[list[int]]
    status: str = "open"
    closed_at: int | None = None
    ctx: dict[str, Any] | None = None

    def deadline(self, d: Spec) -> int:
        return min(self.last_t + d.abandon, self.opened + d.window)

    def copy(self) -> Run:
        # inner lists are never mutated in place, so a shallow copy of each list is enough
        return Run(self.iid, self.opened, self.last_t, self.furthest, list(self.path),
                   list(self.reached), list(self.detours), self.status, self.closed_at,
                   self.ctx)

    def digest(self) -> int:
        """Fingerprint of everything a row shows, to emit an upsert only on change."""
        body = orjson.dumps([self.path, self.detours, self.status, self.closed_at])
        return int.from_bytes(hashlib.blake2b(body, digest_size=6).digest(), "big")


def _step(d: Spec, cur: Run, t: int, eid: str, etype: str, channel: str) -> int:
    """Append one event to an open run (detours, reached steps); returns its step index."""
    prev = cur.path[-1]
    step = cur.furthest
    pos = len(cur.path)  # where this event goes
    idx = d.index.get(etype, -1)
    if channel != prev[3]:
        cur.detours.append([CHANNEL_SWITCH, step, pos])
    if idx < 0:
        if d.off_path is None or etype in d.off_path:
            cur.detours.append([OFF_PATH, step, pos])
    elif idx < step:
        cur.detours.append([BACKTRACK, step, pos])
    elif idx == step:
        # the furthest step's type is always on the path already (it was reached by an
        # event of that type), so the reference's "seen earlier" test reduces to this
        if prev[2] != etype:
            cur.detours.append([LOOP, step, pos])
    else:
        cur.reached.extend([pos] * (idx - step))
        cur.furthest = idx
    cur.path.append([t, eid, etype, channel])
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
    t, eid, etype, channel = ev[0], ev[1], ev[2], ev[3]
    closed: Run | None = None
    if cur is not None:
        deadline = cur.deadline(d)
        if t >= deadline:
            cur.status, cur.closed_at = "abandoned", deadline
            closed, cur = cur, None
    if cur is None:
        if d.index.get(etype, -1) != 0:
            return None, closed, None
        ctx = ev[4] if len(ev) > 4 else None
        cur = Run(instance_id(d.name, customer, eid), t, t, 0, [[t, eid, etype, channel]],
                  [0], [], ctx=ctx)
        return cur, closed, cur
    if _step(d, cur, t, eid, etype, channel) == d.goal:
        cur.status, cur.closed_at = "converted", t
        return None, cur, None
    return cur, closed, None


def path_events(r: Run) -> list[TailEvent]:
    """The run's events as tail events (the opening one with its context)."""
    out: list[TailEvent] = [(p[0], p[1], p[2], p[3], None) for p in r.path]
    if out:
        first = r.path[0]
        out[0] = (first[0], first[1], first[2], first[3], r.ctx)
    return out


def encode_run(r: Run) -> list[Any]:
    """Compact JSON form of an open run: id, opening time, path with relative times."""
    o = r.opened
    return [r.iid, o, [[t - o, eid, ty, ch] for t, eid, ty, ch in r.path], r.ctx]


def decode_run(obj: list[Any], d: Spec) -> Run:
    """Rebuild a run from its path. Deadlines and the goal are not applied: the run was
    open when stored (if the definition changed since, it stays open until settled)."""
    iid, o, path, ctx = obj
    t0, eid0, ty0, ch0 = path[0]
    run = Run(iid, o, o + t0, 0, [[o + t0, eid0, ty0, ch0]], [0], [], ctx=ctx)
    for t, eid, ty, ch in path[1:]:
        _step(d, run, o + t, eid, ty, ch)
    return run
