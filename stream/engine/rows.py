"""A journey instance's warehouse row (`journey_instances`), built from its run.

Rows stay bounded with the run: the path arrays and the per-event detour arrays hold
the first `path_cap` events (stream.engine.runs), detours of later events come as
counts per (kind, step, channel) in the capped_detour_* arrays, and `events` /
`path_truncated` say how much was left out (docs/semantics.md "Capped paths").

One row is built per changed instance on every batch (about 1.4 per event), so this is
on the engine's hot path: columns come from `map(itemgetter)` and the tuple is made
positionally (`tuple.__new__`, in `InstanceRow` field order) instead of by keywords.
"""

from __future__ import annotations

from operator import itemgetter

from journeys.definitions import JourneyDefinition
from stream.engine.outputs import InstanceRow
from stream.engine.runs import DETOUR_KINDS, Run

_first, _third, _fourth = itemgetter(0), itemgetter(2), itemgetter(3)
_make = tuple.__new__
# the order `instance_row` fills the tuple in: a new InstanceRow field fails here, loudly
_ORDER = (
    "instance_id", "journey", "customer_id", "status", "opened_at_ms", "closed_at_ms",
    "last_event_at_ms", "furthest_step", "furthest_step_name", "dropped_at",
    "entry_channel", "channels", "path_types", "path_channels", "path_times",
    "detour_kinds", "detour_steps", "detour_channels", "detour_times", "detour_positions",
    "reached_times", "events", "path_truncated", "capped_detour_kinds",
    "capped_detour_steps", "capped_detour_channels", "capped_detour_counts", "version",
    "definitions_version", "definition_version", "entry_context", "value",
)
if InstanceRow._fields != _ORDER:
    raise ImportError("stream.engine.rows fills InstanceRow by position: update _ORDER "
                      "and instance_row to its fields")


def instance_row(d: JourneyDefinition, customer: str, r: Run, version: int,
                 definitions_version: str) -> InstanceRow:
    """The row of run `r` at `version` (fields in `_ORDER`)."""
    path = r.path
    times = list(map(_first, path))
    types = list(map(_third, path))
    chans = list(map(_fourth, path))
    names = d.steps
    detours = r.detours
    if detours:
        pos = [x[2] for x in detours]
        kinds = [DETOUR_KINDS[x[0]] for x in detours]
        steps = [names[x[1]] for x in detours]
        dchans = [chans[i] for i in pos]
        dtimes = [times[i] for i in pos]
    else:
        pos, kinds, steps, dchans, dtimes = [], [], [], [], []
    if r.more:
        more = r.more_rows()
        mkinds = [DETOUR_KINDS[m[0]] for m in more]
        msteps = [names[m[1]] for m in more]
        mchans = [m[2] for m in more]
        mcounts = [m[3] for m in more]
    else:
        mkinds, msteps, mchans, mcounts = [], [], [], []
    seen = r.seen
    status = r.status
    furthest = names[r.furthest]
    return _make(InstanceRow, (
        r.iid, d.name, customer, status, r.opened, r.closed_at or 0, r.last_t, r.furthest,
        furthest, furthest if status == "abandoned" else "", chans[0],
        list(dict.fromkeys(chans + seen if seen else chans)), types, chans, times,
        kinds, steps, dchans, dtimes, pos, list(map(_first, r.reached)),
        r.n, int(r.n > len(path)), mkinds, msteps, mchans, mcounts,
        version, definitions_version, d.version, r.ctx, r.value,
    ))
