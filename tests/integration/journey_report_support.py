"""Shared data for the journey report tests: generated events -> reference instances ->
warehouse rows, and pandas versions of every report computed from the reference."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ingest.generator import GeneratorConfig, generate_events
from journeys.definitions import Definitions, load_definitions
from journeys.events import parse_occurred_at
from journeys.settings import WarehouseConfig
from tests.reference.journeys_ref import Ev, Instance, all_journeys
from warehouse.backend import Warehouse
from warehouse.connect import connect
from warehouse.schema import migrate
from warehouse.writers_journeys import journey_retraction_row, write_journey_instances

H = 3_600_000
START = 1_704_153_600_000  # 2024-01-02T00:00:00Z
DURATION = 36 * H
DAY1, DAY3 = date(2024, 1, 2), date(2024, 1, 3)


@cache
def _events() -> tuple[dict[str, Any], ...]:
    cfg = GeneratorConfig(seed=7, start_ms=START, duration_ms=DURATION, visitors_per_hour=12,
                          signup_share=0.3)
    return tuple(generate_events(cfg))


@cache
def contexts() -> dict[str, dict[str, Any]]:
    """event_id -> context: the generator's (device, country), with `country` missing on
    about a quarter of events and a nested `utm.source`, so breakdowns meet both."""
    out = {}
    for e in _events():
        ctx = {k: v for k, v in e["context"].items()
               if not (k == "country" and e["event_id"][0] in "0123")}
        out[e["event_id"]] = {**ctx, "utm": {"source": f"src-{e['channel']}"}}
    return out


def entry_context(inst: Instance) -> dict[str, Any]:
    return contexts()[inst.path[0].event_id]


def reference() -> tuple[Definitions, list[Instance]]:
    """Deterministic instances: abandoned (first day), converted and still open."""
    defs = load_definitions()
    evs = [Ev(e["event_id"], e.get("customer_id") or e["anonymous_id"], e["type"], e["channel"],
              parse_occurred_at(e["occurred_at"])) for e in _events()]
    return defs, all_journeys(defs.journeys, evs, watermark=START + DURATION + 12 * H)


KEPT_DETOURS = 1
"""Instances with more detours than this are written as a capped path stores them
(docs/semantics.md "Capped paths"): the first detours per event, the rest as counts per
(kind, step, channel); every detour figure must come out the same."""


def kept_detours(inst: Instance) -> list[Any]:
    return inst.detours[:KEPT_DETOURS]


def _capped(inst: Instance) -> dict[str, Any]:
    counts = Counter((x.kind, x.step, x.channel) for x in inst.detours[len(kept_detours(inst)):])
    keys = sorted(counts)
    return {"events": len(inst.path), "capped_detour_kinds": [k[0] for k in keys],
            "capped_detour_steps": [k[1] for k in keys],
            "capped_detour_channels": [k[2] for k in keys],
            "capped_detour_counts": [counts[k] for k in keys]}


def row(defs: Definitions, inst: Instance, version: int = 2) -> dict[str, Any]:
    d = defs.get(inst.journey)
    kept = kept_detours(inst)
    return {**_capped(inst),
        "instance_id": inst.instance_id, "journey": inst.journey, "customer_id": inst.customer,
        "status": inst.status, "opened_at_ms": inst.opened_at,
        "closed_at_ms": inst.closed_at or 0, "furthest_step": inst.furthest,
        "furthest_step_name": d.steps[inst.furthest],
        "path_types": [e.type for e in inst.path], "path_channels": [e.channel for e in inst.path],
        "path_times": [e.t for e in inst.path],
        "detour_kinds": [x.kind for x in kept], "detour_steps": [x.step for x in kept],
        "detour_channels": [x.channel for x in kept], "detour_times": [x.t for x in kept],
        "version": version, "definitions_version": defs.version,
        "definition_version": d.version,
        "entry_context": entry_context(inst),
    }


def stale(defs: Definitions, inst: Instance) -> dict[str, Any]:
    """An earlier version of the instance (open, first event only) that FINAL must hide."""
    r = row(defs, inst, version=1)
    r.update(status="open", closed_at_ms=0, furthest_step=0,
             furthest_step_name=defs.get(inst.journey).steps[0],
             path_types=r["path_types"][:1], path_channels=r["path_channels"][:1],
             path_times=r["path_times"][:1], detour_kinds=[], detour_steps=[],
             detour_channels=[], detour_times=[], capped_detour_kinds=[],
             capped_detour_steps=[], capped_detour_channels=[], capped_detour_counts=[])
    return r


def frame(defs: Definitions, instances: list[Instance]) -> pd.DataFrame:
    """One row per reference instance with the columns the reports group by."""
    recs = []
    for i in instances:
        d = defs.get(i.journey)
        opened = datetime.fromtimestamp(i.opened_at / 1000, tz=UTC)
        recs.append({
            "journey": i.journey, "status": i.status, "furthest": i.furthest,
            "channel": i.path[0].channel, "day": opened.date(),
            "hour": opened.replace(minute=0, second=0, microsecond=0),
            "dropped_at": i.dropped_at(d) or "",
            "steps_path": tuple(e.type for e in i.path if e.type in d.steps),
            "full_path": tuple(e.type for e in i.path),
            "detours": [(x.kind, x.step, x.channel) for x in i.detours],
            "kinds": {x.kind for x in i.detours}, "instance_id": i.instance_id,
            "context.country": entry_context(i).get("country"),
            "context.device": entry_context(i).get("device"),
            "context.utm.source": entry_context(i)["utm"]["source"],
        })
    return pd.DataFrame(recs)


def open_warehouse(request: pytest.FixtureRequest, backend: str, database: str) -> WarehouseConfig:
    if backend == "server":
        server = request.getfixturevalue("clickhouse_server")
        return WarehouseConfig(backend="server", host=server.host, port=server.tcp_port,
                               database=database)
    path: Path = request.getfixturevalue("chdb_path")
    return WarehouseConfig(backend="chdb", path=path, database=database)


def loaded(config: WarehouseConfig) -> Iterator[tuple[Warehouse, Definitions, list[Instance]]]:
    """A migrated database holding the reference instances, written as a replay would:
    a stale version first, then the final version twice (twice must not double count)."""
    defs, instances = reference()
    wh = connect(config)
    try:
        migrate(wh)
        write_journey_instances(wh, [stale(defs, i) for i in instances])
        final = [row(defs, i) for i in instances]
        write_journey_instances(wh, final)
        write_journey_instances(wh, final)
        # An instance that stops existing (stitching moved it): its tombstone must hide it.
        first = instances[0]
        write_journey_instances(wh, [{**row(defs, first), "instance_id": "ghost"}])
        write_journey_instances(wh, [], retractions=[journey_retraction_row(
            "ghost", first.journey, first.customer, first.opened_at, version=9,
            definition_version=defs.get(first.journey).version)])
        yield wh, defs, instances
    finally:
        wh.execute(f"DROP DATABASE IF EXISTS {config.database}")
        wh.close()
