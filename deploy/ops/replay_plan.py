"""What a replay writes, and what it would change: the pure diff of `journeys replay`
(docs/operations.md "Replay"; the recomputation is stream.engine.recompute, the I/O
warehouse.replay_io and deploy.commands.replay).

Rows are keyed as the warehouse keys them (journey instances by journey, instance id
and definition version; sessions by session id), and both tables keep the highest
version per key. The live worker keeps writing while a replay runs, so who owns a row
is decided by whether it is *final* at the replay's horizon (a watermark):

- final rows (a closed journey, a session whose end + gap is at or before the
  horizon) can no longer change in the stream: the replay writes them when they
  differ from what is stored, with a replay version above any the stream hands out
  (`replay_version`), and retracts stored final rows it no longer produces;
- open rows belong to the live stream, which has (or will have) their newest events:
  the replay only adds those the warehouse has never seen (a new definition, history
  that was late), at version 0, which the stream's next write of them beats (its
  versions come from per-customer counters that start at a generation's
  `version_floor`: journeys/versions.py); a stored open row it disagrees with is
  counted as *left to the live stream*, not touched.

Rows that are equal are not written, so a second replay writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from journeys.versions import FLOOR_SHIFT, TOMBSTONE_VERSION
from warehouse.writers_journeys import journey_instance_row, journey_retraction_row

REPLAY_LEAD = 2**60
"""Versions of replayed final rows: the run's start in ms × 2^20 (the stream's version
floor of a worker generation started then, journeys/versions.py `version_floor`)
plus REPLAY_LEAD. Above every version the stream hands out (a generation started up to
2^40 ms, 34 years, after the replay included; journey instance and session rows alike,
both from the per-customer counter), higher for a later run, whose rows replace an
earlier run's, and below TOMBSTONE_VERSION (2^62, the top of the version range) until
2074."""

OPEN_JOURNEY_VERSION = 0
"""Version of an open instance the replay adds: any write of the stream wins over it."""

OPEN_SESSION_VERSION = 0
"""Version of an open session the replay adds: any write of the stream wins over it."""

INSTANCE_COMPARED = (
    "customer_id", "status", "opened_at_ms", "closed_at_ms", "last_event_at_ms",
    "furthest_step", "furthest_step_name", "dropped_at", "entry_channel", "channels",
    "path_types", "path_channels", "path_times", "detour_kinds", "detour_steps",
    "detour_channels", "detour_times", "context_keys", "context_values", "events",
    "path_truncated", "capped_detour_kinds", "capped_detour_steps",
    "capped_detour_channels", "capped_detour_counts", "journey_value", "has_journey_value",
)
"""The journey_instances columns that make an instance's content (not its version)."""

SESSION_COMPARED = ("customer_id", "started_at_ms", "ended_at_ms", "events", "channels",
                    "first_channel")

def replay_version(started_at_ms: int) -> int:
    """The version of a replay run's final rows (REPLAY_LEAD)."""
    version = (started_at_ms << FLOOR_SHIFT) + REPLAY_LEAD
    if version >= TOMBSTONE_VERSION:
        raise ValueError(f"replay start {started_at_ms} is out of range")
    return version


def normalized(value: Any) -> Any:
    """One comparable form for values as written and as read back by either driver
    (arrays as tuples, numbers as int)."""
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else value
        return tuple(normalized(v) for v in items)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True, slots=True)
class Stored:
    """A row as the warehouse has it (FINAL): its content, and whether it is retracted."""

    content: tuple[Any, ...]  # INSTANCE_COMPARED / SESSION_COMPARED order, normalized
    deleted: bool
    opened_at_ms: int  # journeys: opened_at_ms; sessions: started_at_ms
    final: bool


@dataclass
class Counts:
    """What a replay did (or would do) to one definition's rows, or to sessions."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    left_to_live: int = 0
    # open instances added that no stream had written (e.g. a new definition's): the
    # workers may not hold them in their state, so a later replay closes them
    open_added: int = 0
    converted_before: int = 0
    converted_after: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def changes(self) -> int:
        return self.added + self.changed + self.removed

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Plan:
    """Rows to write for one batch of groups, and the counts per definition name
    (sessions under SESSIONS_KEY)."""

    instance_rows: list[tuple[Any, ...]] = field(default_factory=list)  # JOURNEY_INSTANCES
    session_rows: list[tuple[Any, ...]] = field(default_factory=list)  # SESSIONS order
    counts: dict[str, Counts] = field(default_factory=dict)
    # events listed as late that this batch applies (every definition replayed)
    late_applied: list[str] = field(default_factory=list)

    def count(self, key: str) -> Counts:
        return self.counts.setdefault(key, Counts())

    def extend(self, other: Plan) -> None:
        self.instance_rows.extend(other.instance_rows)
        self.session_rows.extend(other.session_rows)
        self.late_applied.extend(other.late_applied)
        for key, c in other.counts.items():
            self.count(key).add(c)


SESSIONS_KEY = "(sessions)"


def instance_content(row: tuple[Any, ...], columns: Sequence[str]) -> tuple[Any, ...]:
    """The compared part of a JOURNEY_INSTANCES row (columns = the table's columns)."""
    index = {c: i for i, c in enumerate(columns)}
    return tuple(normalized(row[index[c]]) for c in INSTANCE_COMPARED)


def plan_instances(
    plan: Plan, recomputed: Iterable[Mapping[str, Any]],
    stored: Mapping[tuple[str, str], Stored], *, columns: Sequence[str], version: int,
    definition_versions: Mapping[str, str], in_scope: Callable[[int], bool],
) -> None:
    """Diff recomputed instance records (InstanceRow.as_record()) against the stored rows
    of the same groups, journeys and definition versions (key (journey, instance id)),
    adding to `plan` what to write. `in_scope(opened_at_ms)`: the replay's time range;
    `definition_versions`: journey -> the version its rows carry (for retractions)."""
    after: dict[tuple[str, str], str] = {}  # status each key will show ('' = none)
    for key, old in stored.items():
        if not old.deleted and in_scope(old.opened_at_ms):
            plan.count(key[0]).converted_before += old.content[1] == "converted"
            after[key] = str(old.content[1])
    seen: set[tuple[str, str]] = set()
    for rec in recomputed:
        if not in_scope(int(rec["opened_at_ms"])):
            continue
        key = (str(rec["journey"]), str(rec["instance_id"]))
        seen.add(key)
        final = rec["status"] != "open"
        c = plan.count(key[0])
        prior = stored.get(key)
        row = journey_instance_row({**rec, "version": version if final
                                    else OPEN_JOURNEY_VERSION, "deleted": 0})
        if prior is not None and not prior.deleted and prior.content == instance_content(
                row, columns):
            c.unchanged += 1
        elif not final and prior is not None:
            c.left_to_live += 1  # the stream has written it: its newest events are there
        else:
            plan.instance_rows.append(row)
            after[key] = str(rec["status"])
            if prior is None or prior.deleted:
                c.added += 1
                c.open_added += not final
            else:
                c.changed += 1
    for key, old in stored.items():
        if key in seen or old.deleted or not in_scope(old.opened_at_ms):
            continue
        if old.final:
            plan.instance_rows.append(journey_retraction_row(
                key[1], key[0], str(old.content[0]), old.opened_at_ms, version,
                definition_versions.get(key[0], "")))
            plan.count(key[0]).removed += 1
            after[key] = ""
        else:
            plan.count(key[0]).left_to_live += 1
    for key, status in after.items():
        plan.count(key[0]).converted_after += status == "converted"


def plan_sessions(
    plan: Plan, recomputed: Iterable[Sequence[Any]], stored: Mapping[str, Stored], *,
    gap_ms: int, horizon: int, version: int, in_scope: Callable[[int], bool],
) -> None:
    """Diff recomputed session rows (SessionRow, SESSIONS column order) against the
    stored sessions of the same groups (by session id)."""
    c = plan.count(SESSIONS_KEY)
    seen: set[str] = set()
    for s in recomputed:
        sid, customer, start, end, started, events, channels, first, _v, _d = s
        if not in_scope(int(start)):
            continue
        seen.add(sid)
        final = int(end) + gap_ms <= horizon
        content = normalized((customer, start, end, events, channels, first))
        old = stored.get(sid)
        if old is not None and not old.deleted and old.content == content:
            c.unchanged += 1
        elif old is not None and not final:
            c.left_to_live += 1  # the stream has written it: its newest events are there
        else:  # (a final one the stream deleted comes back: the replay version outbids it)
            plan.session_rows.append((sid, customer, start, end, started, events,
                                      list(channels), first,
                                      version if final else OPEN_SESSION_VERSION, 0))
            if old is None or old.deleted:
                c.added += 1
            else:
                c.changed += 1
    for sid, old in stored.items():
        if sid in seen or old.deleted or not in_scope(old.opened_at_ms):
            continue
        if old.final:
            customer, start, end, events, channels, first = old.content
            plan.session_rows.append((sid, customer, start, end, None, events,
                                      list(channels), first, version, 1))
            c.removed += 1
        else:
            c.left_to_live += 1


ALERTS_KEY = "(alerts)"
ALERT_COMPARED = ("kind", "population", "dropped", "rate", "baseline", "baseline_windows",
                  "resolves")
"""The alerts columns that make an alert's content (its id and version are its key)."""


@dataclass(frozen=True, slots=True)
class AlertPlan:
    """Alert records to write and stored alert ids to delete, per definition version."""

    write: list[Mapping[str, Any]]
    delete: dict[str, list[str]]  # definition version -> alert ids


def alert_content(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(round(float(record[c]), 12) if c in ("rate", "baseline")
                 else normalized(record[c] or "" if c == "resolves" else record[c])
                 for c in ALERT_COMPARED)


def plan_alerts(plan: Plan, recomputed: Iterable[Mapping[str, Any]],
                stored: Mapping[tuple[str, str], tuple[tuple[Any, ...], int]], *,
                horizon: int) -> AlertPlan:
    """Diff recomputed alert records (AlertRecord.to_dict()) of windows final at
    `horizon` against the stored ones ((alert id, definition version) -> (content,
    final_at_ms)). Stored alerts of windows final at the horizon that the replay does
    not raise are deleted; later windows are the live stream's."""
    c = plan.count(ALERTS_KEY)
    out = AlertPlan([], {})
    seen: set[tuple[str, str]] = set()
    for rec in recomputed:
        key = (str(rec["alert_id"]), str(rec.get("definition_version") or ""))
        seen.add(key)
        old = stored.get(key)
        c.converted_after += rec["kind"] == "fired"  # (alerts: fired after)
        if old is not None and old[0] == alert_content(rec):
            c.unchanged += 1
            continue
        out.write.append(rec)
        if old is None:
            c.added += 1
        else:
            c.changed += 1
    for key, (content, final_at) in stored.items():
        c.converted_before += content[0] == "fired"
        if key in seen:
            continue
        if final_at <= horizon:
            out.delete.setdefault(key[1], []).append(key[0])
            c.removed += 1
        else:
            c.left_to_live += 1
            c.converted_after += content[0] == "fired"
    return out
