"""The `journey_instances` table: journey instance upserts, written in batches.

Rows come as plain mappings keyed by JOURNEY_INSTANCES column names (warehouse/ does
not import stream/). Derived columns (opened_at, dropped_at, entry_channel, channels,
last_event_at_ms, and context_keys/values from an `entry_context` mapping: the opening
event's context, and `events`: the path's length) are computed here when absent, so
every writer derives them alike.
Replays are harmless: the table is a ReplacingMergeTree(version) keyed by (journey,
instance_id, definition_version), so re-sending a version collapses into one row under
FINAL; rows of another definition version of the instance stay beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, Protocol

import orjson

from warehouse.backend import Warehouse
from warehouse.tables import JOURNEY_INSTANCES

STATUSES = ("open", "converted", "abandoned")
DETOUR_KINDS = ("backtrack", "loop", "off_path", "channel_switch")

_REQUIRED = (
    "instance_id", "journey", "customer_id", "status", "opened_at_ms", "furthest_step",
    "furthest_step_name", "path_types", "path_channels", "path_times", "version",
)
_VERSION = JOURNEY_INSTANCES.columns.index("version")
_DEFINITION_VERSION = JOURNEY_INSTANCES.columns.index("definition_version")
_PATH = ("path_types", "path_channels", "path_times")
_DETOURS = ("detour_kinds", "detour_steps", "detour_channels", "detour_times")
_CAPPED = ("capped_detour_kinds", "capped_detour_steps", "capped_detour_channels",
           "capped_detour_counts")


def _same_length(r: Mapping[str, Any], names: Sequence[str]) -> int:
    lengths = {len(r.get(n) or ()) for n in names}
    if len(lengths) != 1:
        raise ValueError(f"instance {r['instance_id']!r}: {', '.join(names)} differ in length")
    return lengths.pop()


def _distinct(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


CONTEXT_DEPTH = 3
CONTEXT_MAX_KEYS = 64


def flatten_context(context: Mapping[str, Any] | None) -> tuple[list[str], list[str]]:
    """(keys, values) of a context object: nested objects become dotted keys (up to
    CONTEXT_DEPTH levels), scalars text (strings as is, others as JSON), lists JSON.
    Sorted by key and capped at CONTEXT_MAX_KEYS, so one odd event cannot bloat rows."""
    if not context:
        return [], []
    if type(context) is dict and all(type(k) is str and k and type(v) is str
                                     for k, v in context.items()):
        # the common flat case (one row per instance version): the walk would copy it
        keys = sorted(context)[:CONTEXT_MAX_KEYS]
        return keys, [context[k] for k in keys]
    return _walk_context(context)


def _walk_context(context: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """flatten_context's general case (any nesting and value types)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, Mapping) and depth < CONTEXT_DEPTH:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)
        elif prefix:
            flat[prefix] = value if isinstance(value, str) else orjson.dumps(
                value, option=orjson.OPT_SORT_KEYS).decode()

    walk("", context or {}, 0)
    keys = sorted(flat)[:CONTEXT_MAX_KEYS]
    return keys, [flat[k] for k in keys]


def journey_instance_row(r: Mapping[str, Any]) -> tuple[Any, ...]:
    """One row in JOURNEY_INSTANCES.columns order, validated and with derived columns."""
    missing = [k for k in _REQUIRED if k not in r]
    if missing:
        raise ValueError(f"a journey instance lacks {missing}")
    status = r["status"]
    if status not in STATUSES:
        raise ValueError(f"unknown journey instance status {status!r}")
    if not _same_length(r, _PATH):
        raise ValueError(f"instance {r['instance_id']!r} has an empty path")
    _same_length(r, _DETOURS)
    _same_length(r, _CAPPED)
    bad = sorted({*(r.get("detour_kinds") or ()), *(r.get("capped_detour_kinds") or ())}
                 - set(DETOUR_KINDS))
    if bad:
        raise ValueError(f"unknown detour kinds {bad}")
    opened = int(r["opened_at_ms"])
    closed = int(r.get("closed_at_ms") or 0)
    if (status == "open") != (closed == 0):
        raise ValueError(f"instance {r['instance_id']!r}: closed_at_ms must be 0 iff open")
    path_channels = [str(c) for c in r["path_channels"]]
    path_times = [int(t) for t in r["path_times"]]
    dropped = r.get("dropped_at")
    if dropped is None:
        dropped = r["furthest_step_name"] if status == "abandoned" else ""
    if "context_keys" in r:
        ckeys, cvalues = [str(k) for k in r["context_keys"]], [str(v) for v in r["context_values"]]
        if len(ckeys) != len(cvalues):
            raise ValueError(f"instance {r['instance_id']!r}: context keys/values differ")
    else:
        ckeys, cvalues = flatten_context(r.get("entry_context"))
    return (
        str(r["instance_id"]), str(r["journey"]), str(r["customer_id"]), status, opened,
        closed, int(r.get("last_event_at_ms") or path_times[-1]), opened // 1000,
        int(r["furthest_step"]), str(r["furthest_step_name"]), str(dropped),
        str(r.get("entry_channel") or path_channels[0]),
        list(r.get("channels") or _distinct(path_channels)),
        [str(t) for t in r["path_types"]], path_channels, path_times,
        [str(k) for k in r.get("detour_kinds") or ()],
        [str(s) for s in r.get("detour_steps") or ()],
        [str(c) for c in r.get("detour_channels") or ()],
        [int(t) for t in r.get("detour_times") or ()],
        int(r["version"]), str(r.get("definitions_version") or ""),
        1 if r.get("deleted") else 0, ckeys, cvalues,
        int(r.get("events") or len(path_times)), 1 if r.get("path_truncated") else 0,
        *([str(x) for x in r.get(n) or ()] for n in _CAPPED[:3]),
        [int(c) for c in r.get("capped_detour_counts") or ()],
        str(r.get("definition_version") or ""),
        *_value(r),
    )


def _value(r: Mapping[str, Any]) -> tuple[float, int]:
    """(journey_value, has_journey_value); journeys.events.event_value bounded it."""
    v = r.get("value")
    return (0.0, 0) if v is None else (float(v), 1)


def journey_retraction_row(instance_id: str, journey: str, customer_id: str,
                           opened_at_ms: int, version: int,
                           definition_version: str = "") -> tuple[Any, ...]:
    """A tombstone for an instance id that no longer exists: same sorting key (with its
    definition version) and partition (opened_at) as its rows, a higher version,
    deleted = 1. Readers filter `deleted = 0` after FINAL (never in PREWHERE, see
    docs/warehouse.md)."""
    return journey_instance_row({"definition_version": definition_version,
        "instance_id": instance_id, "journey": journey, "customer_id": customer_id,
        "status": "open", "opened_at_ms": opened_at_ms, "furthest_step": 0,
        "furthest_step_name": "", "path_types": [""], "path_channels": [""],
        "path_times": [opened_at_ms], "version": version, "deleted": 1,
        "context_keys": [], "context_values": [],
    })


def journey_instance_rows(records: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows for a batch; a batch's repeated (instance_id, definition version, version)
    are sent once."""
    seen: set[tuple[str, str, int]] = set()
    rows: list[tuple[Any, ...]] = []
    for r in records:
        row = journey_instance_row(r)
        key = (row[0], row[_DEFINITION_VERSION], row[_VERSION])
        if key in seen:
            continue
        seen.add(key)
        rows.append(row)
    return rows


def write_journey_instances(wh: Warehouse, rows: Sequence[Mapping[str, Any]],
                            retractions: Sequence[tuple[Any, ...]] = ()) -> int:
    """One insert for the batch (empty is a no-op); `retractions` are rows from
    journey_retraction_row. Returns rows sent."""
    out = journey_instance_rows(rows)
    out.extend(retractions)
    return wh.insert(JOURNEY_INSTANCES.name, JOURNEY_INSTANCES.columns, out)


class InstanceLike(Protocol):
    """An instance upsert with every column typed (stream.engine.outputs.InstanceRow
    fits): what journey_instance_columns reads. Its rows are live (deleted = 0);
    tombstones come as journey_retraction_row rows."""

    @property
    def instance_id(self) -> str: ...
    @property
    def journey(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def opened_at_ms(self) -> int: ...
    @property
    def closed_at_ms(self) -> int: ...
    @property
    def last_event_at_ms(self) -> int: ...
    @property
    def furthest_step(self) -> int: ...
    @property
    def furthest_step_name(self) -> str: ...
    @property
    def dropped_at(self) -> str: ...
    @property
    def entry_channel(self) -> str: ...
    @property
    def channels(self) -> list[str]: ...
    @property
    def path_types(self) -> list[str]: ...
    @property
    def path_channels(self) -> list[str]: ...
    @property
    def path_times(self) -> list[int]: ...
    @property
    def detour_kinds(self) -> list[str]: ...
    @property
    def detour_steps(self) -> list[str]: ...
    @property
    def detour_channels(self) -> list[str]: ...
    @property
    def detour_times(self) -> list[int]: ...
    @property
    def version(self) -> int: ...
    @property
    def definitions_version(self) -> str: ...
    @property
    def events(self) -> int: ...
    @property
    def path_truncated(self) -> int: ...
    @property
    def capped_detour_kinds(self) -> list[str]: ...
    @property
    def capped_detour_steps(self) -> list[str]: ...
    @property
    def capped_detour_channels(self) -> list[str]: ...
    @property
    def capped_detour_counts(self) -> list[int]: ...
    @property
    def definition_version(self) -> str: ...
    @property
    def entry_context(self) -> Mapping[str, Any] | None: ...
    @property
    def value(self) -> float | None: ...


def journey_instance_columns(instances: Sequence[InstanceLike],
                             retractions: Sequence[tuple[Any, ...]] = ()) -> list[list[Any]]:
    """Columns in JOURNEY_INSTANCES.columns order for a batch of typed instances plus
    tombstone rows: the same rows journey_instance_rows makes of their records (a
    repeated (instance_id, definition version, version) is sent once, the same checks),
    built a column at a time instead of through a mapping per row."""
    instances = _first_of_each(instances)
    status = [r.status for r in instances]
    bad_status = set(status) - _STATUS_SET
    if bad_status:
        raise ValueError(f"unknown journey instance status {sorted(bad_status)!r}")
    ids = [r.instance_id for r in instances]
    opened = [r.opened_at_ms for r in instances]
    closed = [r.closed_at_ms or 0 for r in instances]
    types = [r.path_types for r in instances]
    chans = [r.path_channels for r in instances]
    times = [r.path_times for r in instances]
    d_kinds = [r.detour_kinds for r in instances]
    d_steps = [r.detour_steps for r in instances]
    d_chans = [r.detour_channels for r in instances]
    d_times = [r.detour_times for r in instances]
    c_kinds = [r.capped_detour_kinds for r in instances]
    c_steps = [r.capped_detour_steps for r in instances]
    c_chans = [r.capped_detour_channels for r in instances]
    c_counts = [r.capped_detour_counts for r in instances]
    _check(ids, status, closed, (types, chans, times), (d_kinds, d_steps, d_chans, d_times),
           (c_kinds, c_steps, c_chans, c_counts))
    contexts = [flatten_context(r.entry_context) for r in instances]
    values = [r.value for r in instances]
    columns: list[list[Any]] = [
        ids, [r.journey for r in instances], [r.customer_id for r in instances], status,
        opened, closed,
        [r.last_event_at_ms or t[-1] for r, t in zip(instances, times, strict=True)],
        [t // 1000 for t in opened], [r.furthest_step for r in instances],
        [r.furthest_step_name for r in instances], [r.dropped_at for r in instances],
        [r.entry_channel or c[0] for r, c in zip(instances, chans, strict=True)],
        [r.channels or _distinct(c) for r, c in zip(instances, chans, strict=True)],
        types, chans, times, d_kinds, d_steps, d_chans, d_times,
        [r.version for r in instances], [r.definitions_version or "" for r in instances],
        [0] * len(ids), [k for k, _ in contexts], [v for _, v in contexts],
        [r.events or len(t) for r, t in zip(instances, times, strict=True)],
        [1 if r.path_truncated else 0 for r in instances],
        c_kinds, c_steps, c_chans, c_counts,
        [r.definition_version or "" for r in instances],
        [0.0 if v is None else float(v) for v in values],
        [0 if v is None else 1 for v in values],
    ]
    if retractions:
        for column, more in zip(columns, zip(*retractions, strict=True), strict=True):
            column.extend(more)
    return columns


_STATUS_SET = frozenset(STATUSES)
_DETOUR_SET = frozenset(DETOUR_KINDS)


def _check(ids: list[str], status: list[str], closed: list[int],
           path: tuple[list[Any], ...], detours: tuple[list[Any], ...],
           capped: tuple[list[Any], ...]) -> None:
    """journey_instance_row's per-row checks, for columns (statuses checked already)."""
    types, chans, times = path
    d_kinds, d_steps, d_chans, d_times = detours
    c_kinds, c_steps, c_chans, c_counts = capped
    for i, iid in enumerate(ids):  # chained comparisons: this runs per row
        if (status[i] == "open") != (closed[i] == 0):
            raise ValueError(f"instance {iid!r}: closed_at_ms must be 0 iff open")
        if not len(types[i]) == len(chans[i]) == len(times[i]) != 0:
            raise ValueError(f"instance {iid!r}: {', '.join(_PATH)} differ in length or "
                             "are empty")
        if not len(d_kinds[i]) == len(d_steps[i]) == len(d_chans[i]) == len(d_times[i]):
            raise ValueError(f"instance {iid!r}: {', '.join(_DETOURS)} differ in length")
        if not len(c_kinds[i]) == len(c_steps[i]) == len(c_chans[i]) == len(c_counts[i]):
            raise ValueError(f"instance {iid!r}: {', '.join(_CAPPED)} differ in length")
    bad_kinds = set(chain(chain.from_iterable(detours[0]), chain.from_iterable(capped[0])))
    if bad_kinds - _DETOUR_SET:
        raise ValueError(f"unknown detour kinds {sorted(bad_kinds - _DETOUR_SET)}")


def _first_of_each(instances: Sequence[InstanceLike]) -> Sequence[InstanceLike]:
    """The batch without repeats of an (instance_id, definition version, version)."""
    keys = [(r.instance_id, r.definition_version or "", r.version) for r in instances]
    if len(set(keys)) == len(keys):
        return instances
    seen: set[tuple[str, str, int]] = set()
    out = []
    for key, r in zip(keys, instances, strict=True):
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def write_journey_instance_columns(wh: Warehouse, instances: Sequence[InstanceLike],
                                   retractions: Sequence[tuple[Any, ...]] = ()) -> int:
    """write_journey_instances for typed instances (the stream's sink): one columnar
    insert. Returns rows sent."""
    data = journey_instance_columns(instances, retractions)
    return wh.insert_columns(JOURNEY_INSTANCES.name, JOURNEY_INSTANCES.columns, data)
