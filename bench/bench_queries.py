"""p50/p95 latency of the funnel and abandonment reports over 10 million touchpoints,
on a ClickHouse server (18.16, started here) and on chdb.

Loads, per backend, synthetic data made in the engine with INSERT ... SELECT FROM
numbers() (same SQL on 18.16 and chdb): N touchpoints and the journey instances they
would make (one per `--events-per-instance` events, default 5: 2M instances for 10M
events), spread over 90 days, plus a stale earlier version of 30% of the instances so
FINAL has real collapsing to do, inserted in 10 batches as a stream would leave them
(several parts per partition). Times the report functions the API calls
(warehouse.queries.funnel.run / abandonment.run: SQL + Python shaping) as loaded (every
month unsettled, read with FINAL), then runs `journeys compact` and times them again
(months settled and rolled up: funnel/abandonment read journey_rollups, breakdowns the
rollup lacks — hour, context — read the instances without FINAL) together with the HTTP
endpoints in-process (FastAPI TestClient); each variant `--runs` times after 2 warm-up
calls. Each table is printed with the 1-minute load average before and after it.

    .venv/bin/python bench/bench_queries.py                       # both backends, 10M
    .venv/bin/python bench/bench_queries.py --events 1000000 --backends chdb
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import create_app  # noqa: E402
from journeys.definitions import load_definitions  # noqa: E402
from journeys.settings import ApiSettings, WarehouseConfig  # noqa: E402
from warehouse import compaction  # noqa: E402
from warehouse.backend import Warehouse  # noqa: E402
from warehouse.connect import connect  # noqa: E402
from warehouse.queries import abandonment, funnel  # noqa: E402
from warehouse.schema import migrate  # noqa: E402
from warehouse.tables import TOUCHPOINTS  # noqa: E402

START_MS = 1_704_067_200_000  # 2024-01-01
SPAN_MS = 90 * 86_400_000
DATE_FROM, DATE_TO = date(2024, 1, 1), date(2024, 3, 31)
CHANNELS = "['web', 'app', 'email', 'store', 'call_center', 'chat', 'ads']"
STEPS = ("['product_view', 'add_to_cart', 'cart', 'shipping_details', 'payment_details', "
         "'purchase']")
BATCHES = 10

# One row per number: h, h2 are independent hashes; times spread uniformly over SPAN.
_TOUCHPOINTS = f"""
INSERT INTO {{db}}.touchpoints ({", ".join(TOUCHPOINTS.columns)})
SELECT concat('e', toString(number)), {STEPS}[1 + h %% 6], {CHANNELS}[1 + h2 %% 7],
       t, toDateTime(intDiv(t, 1000)), concat('c', toString(intDiv(number, 25))), '', 'bench',
       '{{{{}}}}', '{{{{"country":"DE"}}}}', toDateTime(intDiv(t, 1000))
FROM (SELECT number, intHash64(number) AS h, intHash64(number + 7919) AS h2,
             toUInt64({START_MS} + h2 %% {SPAN_MS}) AS t
      FROM numbers(%(start)s, %(count)s))
"""

# Funnel-shaped: 40% stop at step 0, 20% at 1, ... 8% convert; 10% of the rest still open.
# Columns named explicitly: any column added later takes its default.
_STEP = f"{STEPS}[f + 1]"
_DETOUR = "h %% 5 = 0"
_INSTANCE_COLUMNS = (
    ("instance_id", "concat('i', toString(number))"), ("journey", "'purchase'"),
    ("customer_id", "concat('c', toString(intDiv(number, 5)))"), ("status", "st"),
    ("opened_at_ms", "o"), ("closed_at_ms", "if(st = 'open', toUInt64(0), o + 3600000)"),
    ("last_event_at_ms", "o + 600000"), ("opened_at", "toDateTime(intDiv(o, 1000))"),
    ("furthest_step", "toUInt8(f)"), ("furthest_step_name", _STEP),
    ("dropped_at", f"if(st = 'abandoned', {_STEP}, '')"), ("entry_channel", "ch"),
    ("channels", "[ch]"), ("path_types", f"arraySlice({STEPS}, 1, f + 1)"),
    ("path_channels", f"arrayMap(x -> ch, arraySlice({STEPS}, 1, f + 1))"),
    ("path_times", "arrayMap(i -> o + i * 60000, range(toUInt64(f + 1)))"),
    ("detour_kinds", f"if({_DETOUR}, ['channel_switch'], emptyArrayString())"),
    ("detour_steps", f"if({_DETOUR}, [{_STEP}], emptyArrayString())"),
    ("detour_channels", f"if({_DETOUR}, ['app'], emptyArrayString())"),
    ("detour_times", f"if({_DETOUR}, [o + 60000], emptyArrayUInt64())"),
    ("version", "%(version)s"), ("definitions_version", "'bench'"),
    ("context_keys", "['country', 'device']"),
    ("context_values", "[['DE', 'FR', 'US', 'GB'][1 + h2 %% 4], ['mobile', 'desktop'][1 + h2 %% 2]]"),
)
# Aliases (AS <column>) keep 18.16 from merging select expressions that look alike.
_INSTANCES = f"""
INSERT INTO {{db}}.journey_instances ({", ".join(c for c, _ in _INSTANCE_COLUMNS)})
SELECT {", ".join(f"{e} AS {c}" for c, e in _INSTANCE_COLUMNS)}
FROM (SELECT number, intHash64(number) AS h, intHash64(number + 7919) AS h2, h %% 100 AS b,
             multiIf(b < 40, 0, b < 60, 1, b < 75, 2, b < 85, 3, b < 92, 4, 5) AS f0,
             if(%(stale)s, 0, f0) AS f,
             if(%(stale)s OR (f0 < 5 AND intDiv(h, 100) %% 10 = 0), 'open',
                if(f0 = 5, 'converted', 'abandoned')) AS st,
             toUInt64({START_MS} + h2 %% {SPAN_MS}) AS o,
             {CHANNELS}[1 + intDiv(h2, 7) %% 7] AS ch
      FROM numbers(%(start)s, %(count)s)
      WHERE NOT %(stale)s OR h %% 10 < 3)
"""


def load(wh: Warehouse, events: int, per_instance: int) -> dict[str, Any]:
    """Fill touchpoints and journey_instances in BATCHES inserts each; returns timings."""
    started = time.perf_counter()
    for i in range(BATCHES):
        n = events // BATCHES
        wh.execute(_TOUCHPOINTS.format(db=wh.database), {"start": i * n, "count": n})
    loaded_tp = time.perf_counter()
    instances = events // per_instance
    n = instances // BATCHES
    for i in range(BATCHES):  # stale versions first, as a replay/upsert stream leaves them
        wh.execute(_INSTANCES.format(db=wh.database),
                   {"start": i * n, "count": n, "version": 1, "stale": True})
    for i in range(BATCHES):
        wh.execute(_INSTANCES.format(db=wh.database),
                   {"start": i * n, "count": n, "version": 2, "stale": False})
    done = time.perf_counter()
    db = wh.database
    return {
        "touchpoints": int(wh.query(f"SELECT count() FROM {db}.touchpoints")[0][0]),
        "instance_rows": int(wh.query(f"SELECT count() FROM {db}.journey_instances")[0][0]),
        "instances": int(wh.query(f"SELECT count() FROM {db}.journey_instances FINAL")[0][0]),
        "parts": int(wh.query(
            "SELECT count() FROM system.parts WHERE database = %(db)s AND active"
            " AND table = 'journey_instances'", {"db": db})[0][0]),
        "load_touchpoints_s": loaded_tp - started, "load_instances_s": done - loaded_tp,
    }


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(p50, p95) in ms after 2 warm-up calls."""
    for _ in range(2):
        fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def variants(wh: Warehouse) -> list[tuple[str, Callable[[], Any]]]:
    d = load_definitions().get("purchase")
    kw: dict[str, Any] = {"date_from": DATE_FROM, "date_to": DATE_TO}
    return [
        ("funnel 90d", lambda: funnel.run(wh, d, **kw)),
        ("abandonment 90d by step", lambda: abandonment.run(wh, d, **kw)),
        ("funnel 90d by channel", lambda: funnel.run(wh, d, breakdown=["channel"], **kw)),
        ("funnel 7d, channel=web", lambda: funnel.run(
            wh, d, date_from=date(2024, 3, 25), date_to=DATE_TO, channel="web")),
        ("abandonment 90d by day x step", lambda: abandonment.run(
            wh, d, breakdown=["day", "step"], **kw)),
        ("abandonment 90d by step x context.country", lambda: abandonment.run(
            wh, d, breakdown=["step", "context.country"], **kw)),
        ("funnel 90d by hour (no rollup)", lambda: funnel.run(
            wh, d, breakdown=["hour"], **kw)),
    ]


def http_variants(client: Any) -> list[tuple[str, Callable[[], Any]]]:
    q = "from=2024-01-01&to=2024-03-31"
    out = []
    for name, path in (("HTTP GET funnel", f"/v1/journeys/purchase/funnel?{q}"),
                       ("HTTP GET abandonment by step,channel",
                        f"/v1/journeys/purchase/abandonment?{q}&breakdown=step,channel")):
        def call(p: str = path) -> None:
            assert client.get(p).status_code == 200
        out.append((name, call))
    return out


def table(title: str, rows: list[tuple[str, Callable[[], Any]]], runs: int) -> None:
    load = os.getloadavg()[0]
    print(f"\n{title} (load {load:.1f})\n\n| query ({runs} runs) | p50 ms | p95 ms |\n"
          "|---|---:|---:|")
    for name, fn in rows:
        p50, p95 = timed(fn, runs)
        print(f"| {name} | {p50:.0f} | {p95:.0f} |", flush=True)
    print(f"(load after: {os.getloadavg()[0]:.1f})")


def measure(wh: Warehouse, config: WarehouseConfig, runs: int, final_runs: int) -> None:
    """As loaded (every month unsettled: FINAL), then after `journeys compact`."""
    from fastapi.testclient import TestClient

    table("as loaded (unsettled months: FINAL)", variants(wh)[:2], final_runs)
    started = time.perf_counter()
    done = compaction.compact(wh)
    print(f"\n`journeys compact` (incl. rollups): {len(done)} partitions in "
          f"{time.perf_counter() - started:.1f} s")
    app = create_app(ApiSettings(warehouse=config), warehouse=wh)
    with TestClient(app) as client:
        table("compacted (settled months: no FINAL)", variants(wh) + http_variants(client), runs)


@contextmanager
def backend(kind: str) -> Iterator[WarehouseConfig]:
    if kind == "server":
        from deploy.local.clickhouse import LocalClickHouse

        with LocalClickHouse() as server:
            yield WarehouseConfig(backend="server", host=server.host, port=server.tcp_port,
                                  database="bench")
        return
    tmp = Path(tempfile.mkdtemp(prefix="journeys-bench-chdb-"))
    try:
        yield WarehouseConfig(backend="chdb", path=tmp, database="bench")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--events-per-instance", type=int, default=5)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--final-runs", type=int, default=10, help="runs before compaction")
    ap.add_argument("--backends", nargs="+", default=["server", "chdb"],
                    choices=["server", "chdb"])
    args = ap.parse_args()
    for kind in args.backends:
        with backend(kind) as config:
            wh = connect(config)
            try:
                migrate(wh)
                info = load(wh, args.events, args.events_per_instance)
                print(f"\n## {kind}: {info['touchpoints']:,} touchpoints "
                      f"(loaded in {info['load_touchpoints_s']:.1f} s), {info['instances']:,} "
                      f"journey instances in {info['instance_rows']:,} rows / {info['parts']} "
                      f"parts (loaded in {info['load_instances_s']:.1f} s)")
                measure(wh, config, args.runs, args.final_runs)
            finally:
                wh.close()


if __name__ == "__main__":
    main()
