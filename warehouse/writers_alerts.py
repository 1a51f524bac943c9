"""The `alerts` table: drop-off alerts and recovery notices, written in batches.

Rows come from alert records as plain mappings (stream.engine.dropoff.AlertRecord
.to_dict() fits; warehouse/ does not import stream/). The table is a ReplacingMergeTree
whose sorting key is exactly what the deterministic alert_id hashes (journey, step,
channel, window), so a re-emitted alert (replay, restart, retried batch) collapses into
one row; queries read it with FINAL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from journeys.timeutil import now_ms
from warehouse.backend import Warehouse
from warehouse.tables import Table

ALERTS = Table(
    "alerts",
    (
        ("alert_id", "String"),
        ("kind", "String"),  # fired | recovered
        ("journey", "String"),
        ("step", "String"),
        ("step_index", "UInt16"),
        ("channel", "String"),  # a channel, or 'all'
        ("window_start_ms", "UInt64"),
        ("window_end_ms", "UInt64"),
        ("window_start", "DateTime('UTC')"),
        ("horizon_ms", "UInt64"),
        ("population", "UInt32"),
        ("dropped", "UInt32"),
        ("rate", "Float64"),
        ("baseline", "Float64"),
        ("baseline_windows", "UInt16"),
        ("threshold", "Float64"),
        ("confidence", "Float64"),
        ("p_value", "Float64"),
        ("resolves", "String"),  # recovered: the alert_id it closes; '' otherwise
        ("created_at_ms", "UInt64"),  # wall clock when it was written
        ("payload", "String"),  # the record as JSON, as emitted
        ("definition_version", "String"),  # 0009: the definition's version (in the key)
    ),
)
"""Created by migration 0002_alerts (warehouse.migrations)."""

_REQUIRED = (
    "alert_id", "kind", "journey", "step", "step_index", "channel", "window_start_ms",
    "window_end_ms", "horizon_ms", "population", "dropped", "rate", "baseline",
    "baseline_windows", "threshold", "confidence", "p_value",
)


def alert_rows(
    records: Sequence[Mapping[str, Any]], *, created_at_ms: int | None = None
) -> list[tuple[Any, ...]]:
    """Rows in ALERTS.columns order; a batch's repeated alerts (id and definition
    version) are sent once."""
    created = now_ms() if created_at_ms is None else created_at_ms
    seen: set[tuple[str, str]] = set()
    rows: list[tuple[Any, ...]] = []
    for r in records:
        missing = [k for k in _REQUIRED if k not in r]
        if missing:
            raise ValueError(f"an alert record lacks {missing}")
        if r["kind"] not in ("fired", "recovered"):
            raise ValueError(f"unknown alert kind {r['kind']!r}")
        key = (str(r["alert_id"]), str(r.get("definition_version") or ""))
        if key in seen:
            continue
        seen.add(key)
        rows.append((
            r["alert_id"], r["kind"], r["journey"], r["step"], int(r["step_index"]),
            r["channel"], int(r["window_start_ms"]), int(r["window_end_ms"]),
            int(r["window_start_ms"]) // 1000, int(r["horizon_ms"]), int(r["population"]),
            int(r["dropped"]), float(r["rate"]), float(r["baseline"]),
            int(r["baseline_windows"]), float(r["threshold"]), float(r["confidence"]),
            float(r["p_value"]), r.get("resolves") or "", created,
            orjson.dumps(dict(r)).decode(), str(r.get("definition_version") or ""),
        ))
    return rows


def write_alerts(
    wh: Warehouse, records: Sequence[Mapping[str, Any]], *, created_at_ms: int | None = None
) -> int:
    """One insert for the batch; idempotent (ReplacingMergeTree on the alert's key)."""
    return wh.insert(ALERTS.name, ALERTS.columns, alert_rows(records, created_at_ms=created_at_ms))
