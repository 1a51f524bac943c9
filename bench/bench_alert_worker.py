"""Alert latency through the real worker: from the moment the data that makes an incident
window final reaches the raw topic to the signed webhook POST arriving.

A local broker, a `python -m stream` worker subprocess (chdb warehouse) and a webhook
receiver on 127.0.0.1. Generated traffic with a payment incident of `--incident-hours`
on the app channel is fed as live traffic would arrive (slices no longer than the
allowed lateness, each processed before the next). For every incident window W, the
feed stops a minute short of the instant that makes W final (W end + horizon +
lateness in event time), then the next three minutes of events are produced at t0;
the first POST naming W arrives at t1. t1 - t0 covers validate -> identity -> customers
-> step-reached -> alerts -> warehouse insert + alerts topic + spool -> HTTP POST.

In wall-clock terms a live incident's first POST arrives `horizon + lateness` after
the end of its first window (the window must be final; DESIGN.md), plus this figure.

    .venv/bin/python bench/bench_alert_worker.py [--incident-hours 4] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from deploy.local.broker import LocalBroker  # noqa: E402
from journeys.settings import KafkaConfig  # noqa: E402
from journeys.timeutil import format_duration_ms  # noqa: E402
from journeys.topics import ensure_journey_topics  # noqa: E402
from tests.integration.alerts_support import (  # noqa: E402
    HOUR,
    ThreadedReceiver,
    incident_traffic,
    occurred_ms,
    produce_events,
)
from tests.integration.stream_support import (  # noqa: E402
    start_worker,
    stop_worker,
    wait_pipeline,
)

SECRET = "bench-secret"
PARTITIONS = 3
MINUTE = 60_000


def feed(kafka: KafkaConfig, app_id: str, events: list[dict[str, Any]], start: int,
         until_ms: int, slice_ms: int, proc: Any, log: Path) -> int:
    """Produce events[start:] before until_ms in slices, each processed before the next."""
    i = start
    while i < len(events) and occurred_ms(events[i]) < until_ms:
        stop = min(occurred_ms(events[i]) + slice_ms, until_ms)
        end = next((j for j in range(i, len(events)) if occurred_ms(events[j]) >= stop),
                   len(events))
        produce_events(kafka.bootstrap_servers, kafka.raw_topic, events[i:end])
        i = end
        wait_pipeline(kafka, app_id, [proc], log, timeout=300)
    return i


def one_run(args: argparse.Namespace, run: int, workdir: Path) -> list[float]:
    traffic = incident_traffic(hours=args.incident_hours + 9, incident_at_h=6,
                               incident_h=args.incident_hours, seed=7 + run)
    rule = traffic.definitions.get("purchase").alert
    lateness = args.lateness_ms
    events = sorted(traffic.raw, key=occurred_ms)
    receiver = ThreadedReceiver(SECRET.encode()).start()
    broker = LocalBroker(workdir=workdir / f"broker{run}").start()
    prefix, app_id = f"bench{run}", f"bench-alerts-{run}"
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                        partitions=PARTITIONS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
    env.update({
        "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "JOURNEYS_KAFKA__TOPIC_PREFIX": prefix,
        "JOURNEYS_KAFKA__PARTITIONS": str(PARTITIONS),
        "JOURNEYS_WAREHOUSE__BACKEND": "chdb",
        "JOURNEYS_WAREHOUSE__PATH": str(workdir / f"warehouse{run}"),
        "JOURNEYS_APP_ID": app_id,
        "JOURNEYS_DATA_DIR": str(workdir / f"data{run}"),
        "JOURNEYS_FLUSH_INTERVAL_S": str(args.flush_interval),
        "JOURNEYS_ALLOWED_LATENESS_MS": str(lateness),
        "JOURNEYS_ALERTING__WEBHOOK_URLS": receiver.url("hook"),
        "JOURNEYS_ALERTING__SIGNING_SECRET": SECRET,
    })
    log = workdir / f"worker{run}.log"
    ensure_journey_topics(kafka)
    proc = start_worker(env, log)
    latencies: list[float] = []
    try:
        lo, hi = traffic.incident
        done = 0
        for w in range(lo, hi, rule.window_ms):
            crossing = w + rule.window_ms + rule.horizon_ms + lateness
            done = feed(kafka, app_id, events, done, crossing - MINUTE, lateness, proc, log)
            end = next((j for j in range(done, len(events))
                        if occurred_ms(events[j]) >= crossing + 2 * MINUTE), len(events))
            seen = len(receiver.received)
            t0 = time.perf_counter()
            produce_events(kafka.bootstrap_servers, kafka.raw_topic, events[done:end])
            done = end

            def named(got: list[Any], w: int = w, seen: int = seen) -> bool:
                return any(orjson.loads(r.body)["alert"]["window_start_ms"] == w
                           for r in got[seen:])

            got = receiver.wait_until(named, 120, f"a POST for window {w}")
            first = min(r.at for r in got[seen:]
                        if orjson.loads(r.body)["alert"]["window_start_ms"] == w)
            latencies.append((first - t0) * 1000)
            print(f"  run {run} window +{(w - traffic.start_ms) // HOUR}h: "
                  f"{latencies[-1]:.0f} ms", flush=True)
        assert receiver.receiver.bad_signatures == 0
    finally:
        stop_worker(proc)
        receiver.stop()
        broker.stop()
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--incident-hours", type=int, default=4, help="one trial per hour")
    ap.add_argument("--runs", type=int, default=1, help="fresh broker + worker per run")
    ap.add_argument("--lateness-ms", type=int, default=HOUR,
                    help="worker allowed lateness; also the feed's slice length")
    ap.add_argument("--flush-interval", type=float, default=0.3,
                    help="JOURNEYS_FLUSH_INTERVAL_S (Faust batch wait per stage)")
    args = ap.parse_args()
    lat: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-alert-worker-") as tmp:
        for run in range(args.runs):
            lat += one_run(args, run, Path(tmp))
    lat.sort()
    print(f"\ncrossing data produced -> webhook POST received, through the worker "
          f"({len(lat)} windows, flush interval {args.flush_interval}s):")
    print(f"  p50 {statistics.median(lat):.0f} ms   min {lat[0]:.0f} ms   "
          f"max {lat[-1]:.0f} ms   mean {statistics.fmean(lat):.0f} ms")
    print(f"end of an incident window -> POST in a live stream: horizon (30m) + lateness "
          f"({format_duration_ms(5 * MINUTE)} by default) + the figure above")


if __name__ == "__main__":
    main()
