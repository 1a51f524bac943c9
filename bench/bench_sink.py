"""The stream's ClickHouse sink alone: CPU per row and per event, server and chdb.

What a worker's sink pays per batch (`stream.agents.sink.WarehouseSink.write_raw` and
`write_customers`): building the insert from the engine's outputs plus the driver's
encoding (clickhouse-driver for the server; chdb's in-process engine for the embedded
warehouse, whose CPU is this process's too). The outputs are real: demo-generator
events validated, run through the journey engine and the sessionizer in batches,
grouped by customer as the customer stage does. The client's CPU (getrusage, all
threads) is measured over the writes only; the server's own CPU is not counted.

After the writes it prints a digest of every written table (rows read back with FINAL,
ordered, `ingested_at` left out): a change to the sink that alters any row changes it.

    .venv/bin/python bench/bench_sink.py                      # 50k events, both backends
    .venv/bin/python bench/bench_sink.py --root /tmp/main     # a `git archive main` tree

Run it alone on the machine for rows/s; CPU µs per row holds up better under load.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def versions_of(sessionizer: Any, counter: Any) -> dict[str, Any]:
    """The row version counter argument, for a --root whose sessionizer takes one (since
    2026-12-04 session rows are versioned by the customer's counter, CustomerJourneys.seq)."""
    import inspect

    return ({"versions": counter} if "versions" in inspect.signature(sessionizer.apply).parameters
            else {})


def outputs(n_events: int, batch: int, seed: int) -> list[tuple[list[Any], ...]]:
    """Per batch: (touchpoints, session rows, instance upserts, retractions)."""
    from ingest.generator import GeneratorConfig, generate_events
    from journeys.definitions import load_definitions
    from journeys.events import EventValidator, Touchpoint
    from stream.engine.journeys import CustomerJourneys, JourneyEngine
    from stream.engine.sessions import Sessionizer

    try:
        from stream.engine.session_state import CustomerState
    except ImportError:  # a --root from before stream/engine/session_state.py
        from stream.engine.sessions import CustomerState

    config = GeneratorConfig(seed=seed, start_ms=1_772_323_200_000,
                             duration_ms=30 * 86_400_000, visitors_per_hour=20_000.0,
                             max_events=n_events, id_prefix="b")
    validator = EventValidator()
    events = [validator.parse(orjson.dumps(e)) for e in generate_events(config)]
    tps = sorted((e for e in events if isinstance(e, Touchpoint)), key=lambda e: e.occurred_at)
    defs = load_definitions()
    engine = JourneyEngine(defs.journeys, definitions_version=defs.version)
    sessionizer = Sessionizer(defs.sessions.gap_ms)
    journeys: dict[str, CustomerJourneys] = defaultdict(CustomerJourneys)
    sessions: dict[str, CustomerState] = defaultdict(CustomerState)
    lateness = 5 * 60_000
    out: list[tuple[list[Any], ...]] = []
    for i in range(0, len(tps), batch):
        chunk = tps[i:i + batch]
        wm = chunk[-1].occurred_at - lateness
        groups: dict[str, list[Touchpoint]] = defaultdict(list)
        for e in chunk:
            groups[e.customer_id or e.anonymous_id or ""].append(e)
        srows: list[Any] = []
        upserts: list[Any] = []
        retractions: list[Any] = []
        for key, evs in groups.items():
            sd = sessionizer.apply(key, sessions[key], evs, watermark=wm,
                                   **versions_of(sessionizer, journeys[key]))
            srows.extend(sd.rows())
            jd = engine.apply(key, journeys[key], evs, watermark=wm)
            upserts.extend(jd.upserts)
            retractions.extend(jd.retractions)
        out.append((chunk, srows, upserts, retractions))
    return out


def digest(wh: Any) -> dict[str, str]:
    """Per table: rows and a hash of its FINAL content (ingested_at left out)."""
    from warehouse.tables import JOURNEY_INSTANCES, SESSIONS, TOUCHPOINTS

    out = {}
    for table, key in ((TOUCHPOINTS, "event_id"), (SESSIONS, "session_id, version"),
                       (JOURNEY_INSTANCES, "journey, instance_id, version")):
        cols = ", ".join(c for c in table.columns if c != "ingested_at")
        rows = wh.query(f"SELECT {cols} FROM {wh.database}.{table.name} FINAL ORDER BY {key}")
        h = hashlib.sha256()
        for r in rows:
            h.update(repr(tuple(str(v) for v in r)).encode())
        out[table.name] = f"{len(rows)} rows {h.hexdigest()[:16]}"
    return out


def measure(wh: Any, batches: list[tuple[list[Any], ...]], label: str, events: int) -> None:
    from journeys.settings import WarehouseConfig
    from stream.agents.sink import WarehouseSink
    from warehouse.schema import migrate

    migrate(wh)
    sink = WarehouseSink(WarehouseConfig(), wh)
    raw_cpu = cust_cpu = 0.0
    n_tp = n_cust = 0
    t0 = time.perf_counter()
    for tps, srows, ups, retr in batches:
        c0 = _cpu()
        sink.write_raw(tps, [])
        c1 = _cpu()
        sink.write_customers(srows, ups, retr)
        c2 = _cpu()
        raw_cpu += c1 - c0
        cust_cpu += c2 - c1
        n_tp += len(tps)
        n_cust += len(srows) + len(ups) + len(retr)
    wall = time.perf_counter() - t0
    total = raw_cpu + cust_cpu
    print(f"{label}: {len(batches)} batches, {wall:.1f} s wall, load {os.getloadavg()[0]:.1f}")
    print(f"  touchpoints            {n_tp:>8,} rows  {raw_cpu * 1e6 / n_tp:7.1f} µs CPU/row  "
          f"{n_tp / raw_cpu:>10,.0f} rows/CPU-s")
    print(f"  sessions+instances     {n_cust:>8,} rows  {cust_cpu * 1e6 / n_cust:7.1f} µs CPU/row"
          f"  {n_cust / cust_cpu:>10,.0f} rows/CPU-s")
    print(f"  all, per input event   {events:>8,} evts  {total * 1e6 / events:7.1f} µs CPU/event")
    for name, d in digest(wh).items():
        print(f"  {name:<22} {d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--backends", default="server,chdb")
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="the source tree to measure (e.g. a `git archive main` checkout)")
    args = ap.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    sys.path.insert(1, str(ROOT))  # deploy.local for the server, if the root lacks it

    batches = outputs(args.events, args.batch, args.seed)
    counts = [sum(len(b[k]) for b in batches) for k in range(4)]
    print(f"root {args.root}: {counts[0]:,} events -> {counts[1]:,} session rows, "
          f"{counts[2]:,} instance upserts, {counts[3]:,} retractions")
    backends = args.backends.split(",")
    if "server" in backends:
        from deploy.local.clickhouse import LocalClickHouse
        from warehouse.server import ServerWarehouse

        with LocalClickHouse() as ch:
            wh = ServerWarehouse(database="bench_sink", host=ch.host, port=ch.tcp_port)
            try:
                wh.execute("CREATE DATABASE IF NOT EXISTS bench_sink")
                measure(wh, batches, "ClickHouse server", counts[0])
            finally:
                wh.close()
    if "chdb" in backends:
        from warehouse.embedded import EmbeddedWarehouse

        with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
            ewh = EmbeddedWarehouse(path=tmp, database="bench_sink")
            try:
                ewh.execute("CREATE DATABASE IF NOT EXISTS bench_sink")
                measure(ewh, batches, "chdb", counts[0])
            finally:
                ewh.close()


if __name__ == "__main__":
    main()
