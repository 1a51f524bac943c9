"""How a customer's open run and a stitched device's events make one timeline per
definition (stream.engine.journeys `absorb`; docs/semantics.md "Identity stitching"
and "Capped paths").

Uncapped runs are merged exactly: both sides' known events, sorted in reference order
and deduplicated, are replayed from nothing. A capped run (stream.engine.runs) no longer
has the events beyond its cap, so it cannot be replayed; it is continued from its
summary instead, with the other side's events that come after its last event. That is
exact whenever the other side's events all come after the capped run's last event (the
usual case: a long anonymous session, then a login). Events of the other side that sort
before it would have had to interleave with the dropped events: they are left out of
that instance (and an open run of the other side that opened before it is merged into
it rather than replayed), so its figures can differ from the reference's there.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from stream.engine.runs import Run, TailEvent, instance_id, path_events


def _order(e: TailEvent) -> tuple[int, str]:
    return e[0], e[1]


def merge_plan(journey: str, customer: str, cur: Run | None, other: Run | None,
               early: Sequence[TailEvent], drop: Collection[str] = (),
               ) -> tuple[Run | None, list[TailEvent]]:
    """(run to continue or None, events to feed it in order).

    `cur`: the customer's open run; `other`: the device's open run of the same
    definition when it is capped (an uncapped one's events are in `early`); `early`:
    the device's released events before the customer's checkpoint; `drop`: ids of
    `cur`'s events outranked by a released copy (only ever for an uncapped `cur`). A
    device's run continued here becomes the customer's: its id is the customer's (as a
    replay's)."""
    capped = [r for r in (cur, other) if r is not None and r.truncated]
    if not capped:
        base = path_events(cur) if cur is not None else []
        if drop:
            base = [e for e in base if e[1] not in drop]
        return None, _merged([base, early])
    run = min(capped, key=lambda r: (r.opened, r.path[0][1])).copy()
    run.iid = instance_id(journey, customer, run.path[0][1])
    known = {e[1] for e in path_events(run)}
    rest = [path_events(r) for r in (cur, other)
            if r is not None and r.path[0][1] != run.path[0][1]]
    after = _order(tuple(run.last))
    return run, [e for e in _merged([*rest, early])
                 if e[1] not in known and _order(e) > after]


def _merged(sources: Iterable[Sequence[TailEvent]]) -> list[TailEvent]:
    """Events of all sources in reference order, the first copy of an id kept."""
    out: dict[str, TailEvent] = {}
    for events in sources:
        for e in events:
            out.setdefault(e[1], e)
    return sorted(out.values(), key=_order)
