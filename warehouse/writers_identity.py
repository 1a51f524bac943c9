"""The `identity_merges` table (migration 0004): one row per anonymous id linked to a
customer by the stream's identity stitching (who, when in event time, from which event).

Rows come as mappings keyed like stream.engine.identity.MergeRecord (warehouse/ does not import
stream/). Idempotent: ReplacingMergeTree by anonymous_id, and the stream's first link
wins, so a re-delivered link writes the same row again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from journeys.timeutil import now_ms
from warehouse.backend import Warehouse
from warehouse.tables import IDENTITY_MERGES


def identity_merge_rows(merges: Sequence[Mapping[str, Any]], *,
                        recorded_at_ms: int | None = None) -> list[tuple[Any, ...]]:
    recorded = (now_ms() if recorded_at_ms is None else recorded_at_ms) // 1000
    return [
        (str(m["anonymous_id"]), str(m["customer_id"]), int(m["merged_at_ms"]),
         int(m["merged_at_ms"]) // 1000, str(m["event_id"]), str(m.get("event_type") or ""),
         str(m.get("channel") or ""), recorded)
        for m in merges
    ]


def write_identity_merges(wh: Warehouse, merges: Sequence[Mapping[str, Any]]) -> int:
    """One insert for the batch (empty is a no-op). Returns rows sent."""
    return wh.insert(IDENTITY_MERGES.name, IDENTITY_MERGES.columns, identity_merge_rows(merges))
