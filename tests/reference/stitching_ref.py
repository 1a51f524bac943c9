"""Reference attribution for stitched streams, and reference views to compare with.

Identity stitching as the stream does it when nothing of a device is final yet: an
event belongs to its customer_id, else to the customer its device was first linked to
(first event carrying both usable ids, in arrival order), else to the device id; events
with placeholder ids only belong to nobody (docs/stream.md, "Identity stitching").
"""

from __future__ import annotations

from typing import Any

from journeys.definitions import Definitions
from tests.reference.journeys_ref import Ev, all_journeys, sessions


def resolve(events: list[dict[str, Any]], junk: set[str],
            links: dict[str, str] | None = None) -> list[Ev]:
    """Reference attribution: customer id, else the customer the device was linked to,
    else the device id; placeholder-only events belong to nobody. `links` (device ->
    customer) defaults to each device's first link in the order of `events`; the
    stream's order is the validate stage's release order (time order), so tests with
    competing links pass the links the stream recorded."""
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


def reference_view(defs: Definitions, evs: list[Ev], watermark: int) -> dict[str, tuple[Any, ...]]:
    out = {}
    by_name = {d.name: d for d in defs.journeys}
    for i in all_journeys(defs.journeys, evs, watermark):
        d = by_name[i.journey]
        out[i.instance_id] = (
            i.journey, i.customer, i.status, i.opened_at, i.closed_at or 0, i.furthest,
            [e.t for e in i.path], [e.type for e in i.path], [e.channel for e in i.path],
            [(x.kind, x.step, x.channel, x.t) for x in i.detours])
        assert d.name == i.journey
    return out


def reference_sessions(evs: list[Ev], gap_ms: int) -> set[tuple[str, int, int, int]]:
    return set(sessions(evs, gap_ms))
