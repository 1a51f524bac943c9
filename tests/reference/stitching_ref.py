"""Reference attribution for stitched streams, and reference views to compare with.

Two references:

- `resolve` + `reference_view` / `reference_sessions`: full retroactivity. An event
  belongs to its customer_id, else to the customer its device was linked to, else to
  the device id; placeholder-only events belong to nobody. The stream equals this
  whenever nothing of a device or of its customer was closed at the link's time and
  no event of either side was outside every open journey then (the property tests'
  `final_at_link`).
- `split_reference`: the product's exact semantics for every case (docs/semantics.md
  "Identity stitching"): the split falls at the link's event time. A linked device's
  anonymous events before the link are its own, those at or after it the customer's;
  at the link what of the device is closed stays under the device, what is open (its
  open journeys' events, its open sessions) joins the customer, whose own closed
  journeys and sessions stay and whose open ones are replayed together with the
  device's: a journey from the events of both sides' open journeys (less, per
  definition, the device's events that were in its closed instances of that
  definition), sessions from both sides' open sessions. Events that were in no open
  journey at the link join no journey of the other side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson

from journeys.definitions import Definitions
from journeys.events import event_value, parse_occurred_at
from tests.reference.journeys_ref import (
    Ev,
    Instance,
    all_journeys,
    journeys_for_customer,
    ordered,
    sessions,
)

END = 2**62


def resolve(events: list[dict[str, Any]], junk: set[str],
            links: dict[str, str] | None = None) -> list[Ev]:
    """Reference attribution: customer id, else the customer the device was linked to,
    else the device id; placeholder-only events belong to nobody. `links` (device ->
    customer) defaults to each device's first link in the order of `events`."""
    def ok(x: str | None) -> bool:
        return x is not None and x.strip().lower() not in junk

    if links is None:
        links = {}
        for e in events:
            if ok(e.get("customer_id")) and ok(e.get("anonymous_id")):
                links.setdefault(e["anonymous_id"], e["customer_id"])
    out = []
    for e in events:
        cust, anon = e.get("customer_id"), e.get("anonymous_id")
        key = cust if ok(cust) else (links.get(anon, anon) if ok(anon) else None)
        if key is not None:
            out.append(Ev(e["event_id"], key, e["type"], e["channel"], e["occurred_at"]))
    return out


def view_of(instances: Iterable[Instance]) -> dict[str, tuple[Any, ...]]:
    return {
        i.instance_id: (
            i.journey, i.customer, i.status, i.opened_at, i.closed_at or 0, i.furthest,
            [e.t for e in i.path], [e.type for e in i.path], [e.channel for e in i.path],
            [(x.kind, x.step, x.channel, x.t) for x in i.detours], i.value)
        for i in instances}


def reference_view(defs: Definitions, evs: list[Ev], watermark: int) -> dict[str, tuple[Any, ...]]:
    return view_of(all_journeys(defs.journeys, evs, watermark))


def reference_sessions(evs: list[Ev], gap_ms: int) -> set[tuple[str, int, int, int]]:
    return set(sessions(evs, gap_ms))


# ------------------------------------------------------------------ split at the link
def links_of(events: list[dict[str, Any]], junk: set[str]) -> dict[str, tuple[str, int]]:
    """Device -> (customer, link time): the customer of its earliest linking event (ties
    by event id), linked at the earliest of its linking events to that customer."""
    def ok(x: str | None) -> bool:
        return x is not None and x.strip().lower() not in junk

    first: dict[str, tuple[int, str, str]] = {}
    for e in events:
        anon, cust = e.get("anonymous_id"), e.get("customer_id")
        if ok(anon) and ok(cust):
            key = (e["occurred_at"], e["event_id"], cust)
            first[anon] = min(first.get(anon, key), key)
    return {anon: (cust, t) for anon, (t, _eid, cust) in first.items()}


def _owned(events: list[dict[str, Any]], junk: set[str],
           links: dict[str, tuple[str, int]]) -> dict[str, list[Ev]]:
    def ok(x: str | None) -> bool:
        return x is not None and x.strip().lower() not in junk

    out: dict[str, list[Ev]] = {}
    for e in events:
        cust, anon, t = e.get("customer_id"), e.get("anonymous_id"), e["occurred_at"]
        if ok(cust):
            key = cust
        elif ok(anon):
            link = links.get(anon)
            key = link[0] if link is not None and t >= link[1] else anon
        else:
            continue
        value = event_value(e.get("properties") or {})[0]
        out.setdefault(key, []).append(Ev(e["event_id"], key, e["type"], e["channel"], t,
                                          value))
    return {k: ordered(v) for k, v in out.items()}


def _as(key: str, evs: Iterable[Ev]) -> list[Ev]:
    return [replace(e, customer=key) for e in evs]


def _sessions_of(evs: list[Ev], gap: int) -> list[list[Ev]]:
    out: list[list[Ev]] = []
    for e in evs:
        if out and e.t - out[-1][-1].t < gap:
            out[-1].append(e)
        else:
            out.append([e])
    return out


def split_reference(defs: Definitions, events: list[dict[str, Any]], junk: set[str],
                    watermark: int) -> tuple[dict[str, tuple[Any, ...]],
                                             set[tuple[str, int, int, int]]]:
    """(journey view, sessions) of the product's stitching semantics (module docstring)
    at the final `watermark`."""
    instances, out_sessions = split(defs, events, junk, watermark)
    return view_of(instances), out_sessions


def split(defs: Definitions, events: list[dict[str, Any]], junk: set[str],
          watermark: int | None, *, links_before: int | None = None
          ) -> tuple[list[Instance], set[tuple[str, int, int, int]]]:
    """(journey instances, sessions) of the product's stitching semantics; `watermark`
    None keeps the last instances open. `occurred_at` may be ISO text or epoch ms.
    `links_before`: only links made before that event time (what was known then, for
    drop-off windows: tests/reference/alerts_ref.py `windows_as_of`)."""
    events = [e if isinstance(e["occurred_at"], int) else
              {**e, "occurred_at": parse_occurred_at(e["occurred_at"])} for e in events]
    gap = defs.sessions.gap_ms
    unique = _winners(events)
    links = links_of(unique, junk)
    if links_before is not None:
        links = {d: link for d, link in links.items() if link[1] < links_before}
    owned = _owned(unique, junk, links)
    into: dict[str, list[tuple[int, str]]] = {}
    for dev, (cust, at) in links.items():
        into.setdefault(cust, []).append((at, dev))
    instances: list[Instance] = []
    out_sessions: set[tuple[str, int, int, int]] = set()
    # device -> (per definition: its events handed over for it, sessions handed over)
    handed: dict[str, tuple[dict[str, list[Ev]], list[list[Ev]]]] = {}
    for dev, (_cust, at) in links.items():
        evs = [e for e in owned.get(dev, []) if e.t < at]
        early: dict[str, Ev] = {}
        closed: dict[str, set[str]] = {}  # definition -> ids in its closed instances
        for d in defs.journeys:
            for inst in journeys_for_customer(d, evs, at):
                if inst.status == "open":
                    early.update((e.event_id, e) for e in inst.path)
                else:
                    instances.append(inst)
                    closed.setdefault(d.name, set()).update(e.event_id for e in inst.path)
        per_def = {d.name: [e for e in early.values() if e.event_id not in closed.get(d.name, ())]
                   for d in defs.journeys}
        moved = []
        for s in _sessions_of(evs, gap):
            if s[-1].t + gap <= at:
                out_sessions.add((dev, s[0].t, s[-1].t, len(s)))
            else:
                moved.append(s)
        handed[dev] = (per_def, moved)
    for key, evs in owned.items():
        if key in links:
            continue  # a linked device: done above
        bounds = sorted(into.get(key, []))
        instances.extend(_customer_journeys(defs, key, evs, bounds, handed, watermark))
        out_sessions |= _customer_sessions(key, evs, bounds, handed, gap)
    return instances, out_sessions


def _customer_journeys(defs: Definitions, key: str, evs: list[Ev],
                       bounds: list[tuple[int, str]],
                       handed: dict[str, tuple[dict[str, list[Ev]], list[list[Ev]]]],
                       watermark: int | None) -> list[Instance]:
    out: list[Instance] = []
    for d in defs.journeys:
        carry: list[Ev] = []
        edges = [(-END, None), *bounds]
        for i, (start, dev) in enumerate(edges):
            stop = edges[i + 1][0] if i + 1 < len(edges) else END
            seg = [e for e in evs if start <= e.t < stop]
            early = _as(key, handed[dev][0][d.name]) if dev is not None else []
            timeline = ordered([*carry, *early, *seg])
            wm = stop if stop != END else watermark
            insts = journeys_for_customer(d, timeline, wm)
            carry = []
            for inst in insts:
                if inst.status == "open" and stop != END:
                    carry = inst.path
                else:
                    out.append(inst)
    return out


def _customer_sessions(key: str, evs: list[Ev], bounds: list[tuple[int, str]],
                       handed: dict[str, tuple[dict[str, list[Ev]], list[list[Ev]]]],
                       gap: int) -> set[tuple[str, int, int, int]]:
    out: set[tuple[str, int, int, int]] = set()
    carry: list[Ev] = []
    edges = [(-END, None), *bounds]
    for i, (start, dev) in enumerate(edges):
        stop = edges[i + 1][0] if i + 1 < len(edges) else END
        seg = [e for e in evs if start <= e.t < stop]
        moved = [_as(key, s) for s in handed[dev][1]] if dev is not None else []
        timeline = ordered([*carry, *(e for s in moved for e in s), *seg])
        carry = []
        for s in _sessions_of(timeline, gap):
            if stop != END and s[-1].t + gap > stop:
                carry.extend(s)
            else:
                out.add((key, s[0].t, s[-1].t, len(s)))
    return out


def _winners(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per event id the copy of smaller rank (docs/semantics.md "Ordering and
    duplicates": time, type, channel, context, journey value). Not modelled: the
    stream's remaining limit, a customer copy settled before a link that a device
    copy outranks (docs/reliability.md "Not guaranteed yet")."""
    def rank(e: dict[str, Any]) -> tuple[Any, ...]:
        value = event_value(e.get("properties") or {})[0]
        ctx = e.get("context")
        return (e["occurred_at"], e["type"], e["channel"],
                orjson.dumps(ctx, option=orjson.OPT_SORT_KEYS).decode() if ctx else "",
                (0, 0.0) if value is None else (1, value))
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        old = out.get(e["event_id"])
        if old is None or rank(e) < rank(old):
            out[e["event_id"]] = e
    return list(out.values())
