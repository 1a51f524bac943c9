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
from typing import Any

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
