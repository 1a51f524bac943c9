"""What the journey engine emits (stream.engine.journeys): instance rows, retractions,
step-reached observations for drop-off alerting, and the per-call delta, plus
`fold_rows`, the warehouse's view of them (tests, tools).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class StepReached:
    """An instance first reached a step (time and channel of the event that reached it)."""

    journey: str
    instance_id: str
    step_index: int
    reached_at_ms: int
    channel: str
    # None: known when the step was reached. Else the event time this observation (or
    # retraction) became true: a stitching merge's link time. It applies only to
    # windows not final by then (docs/alerting.md "Stitching and observations"), so a
    # window counts the instances as known at its final point whatever the timing.
    as_of: int | None = None


def retraction(journey: str, instance_id: str, furthest_step: int,
               as_of: int | None = None) -> StepReached:
    """"Forget this instance": its steps 0..furthest_step were observed, but stitching
    merged it into another run (stream.engine.journeys.absorb). Encoded as a negative
    step index so it travels like any observation; applied only while its windows are
    not final (the evaluator cannot revise a reported window)."""
    return StepReached(journey, instance_id, -1 - furthest_step, 0, "", as_of)


def retracted_steps(obs: StepReached) -> int | None:
    """The furthest step a retraction covers; None for an ordinary observation."""
    return -1 - obs.step_index if obs.step_index < 0 else None


class InstanceRow(NamedTuple):
    """One `journey_instances` upsert; field names are the table's column names
    (warehouse.tables.JOURNEY_INSTANCES) plus detour_positions, reached_times and
    entry_context (flattened into context_keys/values by the writer). The path and
    per-event detour arrays hold the first `path_cap` events only; `events` and the
    capped_detour_* counts cover the rest (stream.engine.runs)."""

    instance_id: str
    journey: str
    customer_id: str
    status: str  # open | converted | abandoned
    opened_at_ms: int
    closed_at_ms: int  # 0 while open
    last_event_at_ms: int
    furthest_step: int
    furthest_step_name: str
    dropped_at: str  # furthest step name when abandoned, else ''
    entry_channel: str
    channels: list[str]  # distinct, first-seen order
    path_types: list[str]
    path_channels: list[str]
    path_times: list[int]
    detour_kinds: list[str]
    detour_steps: list[str]
    detour_channels: list[str]
    detour_times: list[int]
    detour_positions: list[int]  # index into the path arrays of the causing event
    reached_times: list[int]  # per step index up to furthest_step
    # capped paths (docs/semantics.md "Capped paths"): all events, whether the path
    # arrays hold the first ones only, and detours of the events beyond them, counted
    events: int
    path_truncated: int
    capped_detour_kinds: list[str]
    capped_detour_steps: list[str]
    capped_detour_channels: list[str]
    capped_detour_counts: list[int]
    version: int
    definitions_version: str  # the definitions file's version
    definition_version: str = ""  # this journey definition's version (in the key)
    entry_context: dict[str, Any] | None = None
    value: float | None = None  # journey value (docs/semantics.md "Journey value")

    def as_record(self) -> dict[str, Any]:
        """Mapping for warehouse.writers_journeys (extra keys are ignored there)."""
        return self._asdict()


class Retraction(NamedTuple):
    """An instance id that no longer exists (a late earlier event absorbed its opening
    event into another instance, or stitching moved it to the customer); it may come
    back later with a higher version. `opened_at_ms` places the row in the instance's
    table partition (FINAL collapses within a partition only)."""

    instance_id: str
    journey: str
    customer_id: str
    version: int
    opened_at_ms: int = 0
    definition_version: str = ""  # the definition version of the rows it retracts


@dataclass(slots=True)
class JourneyDelta:
    upserts: list[InstanceRow] = field(default_factory=list)
    retractions: list[Retraction] = field(default_factory=list)
    closed: list[InstanceRow] = field(default_factory=list)  # final closes, once each
    reached: list[StepReached] = field(default_factory=list)  # final, once each
    applied: int = 0
    duplicates: int = 0
    late: int = 0  # behind this customer's checkpoint: not applied, caller counts them

    def extend(self, other: JourneyDelta) -> None:
        self.upserts.extend(other.upserts)
        self.retractions.extend(other.retractions)
        self.closed.extend(other.closed)
        self.reached.extend(other.reached)
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.late += other.late


def fold_rows(
    rows: dict[str, InstanceRow], delta: JourneyDelta, *, versions: dict[str, int] | None = None
) -> None:
    """Apply a delta's upserts and retractions like the warehouse would (max version
    wins per instance id). `versions` keeps the winning version of retracted ids too."""
    seen = versions if versions is not None else {r.instance_id: r.version for r in rows.values()}
    # (one definition version per engine: the instance id alone is the key here)
    items: Sequence[InstanceRow | Retraction] = [*delta.upserts, *delta.retractions]
    for item in items:
        if item.version <= seen.get(item.instance_id, -1):
            continue
        seen[item.instance_id] = item.version
        if isinstance(item, Retraction):
            rows.pop(item.instance_id, None)
        else:
            rows[item.instance_id] = item
