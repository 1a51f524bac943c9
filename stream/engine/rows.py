"""A journey instance's warehouse row (`journey_instances`), built from its run.

Rows stay bounded with the run: the path arrays and the per-event detour arrays hold
the first `path_cap` events (stream.engine.runs), detours of later events come as
counts per (kind, step, channel) in the capped_detour_* arrays, and `events` /
`path_truncated` say how much was left out (docs/semantics.md "Capped paths").
"""

from __future__ import annotations

from journeys.definitions import JourneyDefinition
from stream.engine.outputs import InstanceRow
from stream.engine.runs import DETOUR_KINDS, Run


def instance_row(d: JourneyDefinition, customer: str, r: Run, version: int,
                 definitions_version: str) -> InstanceRow:
    times, _ids, types, chans = (list(col) for col in zip(*r.path, strict=True))
    pos = [x[2] for x in r.detours]
    names = d.steps
    more = r.more_rows()
    return InstanceRow(
        instance_id=r.iid, journey=d.name, customer_id=customer, status=r.status,
        opened_at_ms=r.opened, closed_at_ms=r.closed_at or 0, last_event_at_ms=r.last_t,
        furthest_step=r.furthest, furthest_step_name=names[r.furthest],
        dropped_at=names[r.furthest] if r.status == "abandoned" else "",
        entry_channel=chans[0], channels=list(dict.fromkeys([*chans, *r.seen])),
        path_types=types, path_channels=chans, path_times=times,
        detour_kinds=[DETOUR_KINDS[x[0]] for x in r.detours],
        detour_steps=[names[x[1]] for x in r.detours],
        detour_channels=[chans[i] for i in pos], detour_times=[times[i] for i in pos],
        detour_positions=pos, reached_times=[x[0] for x in r.reached],
        events=r.n, path_truncated=int(r.truncated),
        capped_detour_kinds=[DETOUR_KINDS[m[0]] for m in more],
        capped_detour_steps=[names[m[1]] for m in more],
        capped_detour_channels=[m[2] for m in more],
        capped_detour_counts=[m[3] for m in more],
        version=version, definitions_version=definitions_version,
        definition_version=d.version,
        entry_context=r.ctx,
        value=r.value,
    )
