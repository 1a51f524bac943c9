"""Abandonment latency: from a journey's deadline passing to the abandoned row being
queryable in ClickHouse.

Starts its own embedded broker and local ClickHouse server (127.0.0.1, stopped at the
end) and one stream worker with a journey `quick` (abandon_after 5s) and an allowed
lateness of 1 s. Each trial produces one entry event stamped with the wall clock, so
event time runs with real time: its deadline is occurred_at + 5 s and the watermark
(max event time - 1 s) passes it at wall time deadline + 1 s. The figure is the wall
time from that moment until `journey_instances FINAL` shows the instance abandoned
(polled every 50 ms). Two modes: `traffic` (other customers' events keep every
partition moving) and `idle` (nothing else arrives: the wall-clock idle advance and
the timer must do it).

    .venv/bin/python bench/bench_abandon_latency.py              # ~1-2 minutes
    .venv/bin/python bench/bench_abandon_latency.py --trials 40 --modes idle
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from kafka import KafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.local.broker import LocalBroker  # noqa: E402
from deploy.local.clickhouse import LocalClickHouse  # noqa: E402
from journeys.settings import KafkaConfig, WarehouseConfig  # noqa: E402
from journeys.timeutil import now_ms  # noqa: E402
from journeys.topics import ensure_journey_topics  # noqa: E402
from stream.engine.runs import instance_id  # noqa: E402
from stream.stages.envelopes import partition_for  # noqa: E402
from warehouse.connect import connect  # noqa: E402

ABANDON_MS = 5_000
LATENESS_MS = 1_000
PARTITIONS = 4
DEFINITIONS = f"""
journeys:
  - name: quick
    steps: [visit, buy]
    abandon_after: {ABANDON_MS}ms
    conversion_window: 1h
sessions: {{gap: 30m}}
"""


def filler_keys() -> list[str]:
    keys, k = {}, 0
    while len(keys) < PARTITIONS:
        keys.setdefault(partition_for(f"filler-{k}", PARTITIONS), f"filler-{k}")
        k += 1
    return list(keys.values())


def traffic(producer: KafkaProducer, topic: str, stop: threading.Event) -> None:
    """A page view on every partition every ~100 ms, stamped with the wall clock."""
    keys, n = filler_keys(), 0
    while not stop.is_set():
        for key in keys:
            n += 1
            producer.send(topic, key=key.encode(), value=orjson.dumps({
                "event_id": f"fill-{n}", "type": "page", "channel": "web",
                "occurred_at": now_ms(), "customer_id": key}))
        producer.flush()
        stop.wait(0.1)


def run_mode(mode: str, trials: int, kafka: KafkaConfig, wh_config: WarehouseConfig) -> list[float]:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks=1, linger_ms=0)
    stop = threading.Event()
    feeder = threading.Thread(target=traffic, args=(producer, kafka.raw_topic, stop), daemon=True)
    if mode == "traffic":
        feeder.start()
    wh = connect(wh_config, create_database=False)
    pending: dict[str, float] = {}  # instance id -> wall time (s) the deadline passes
    delays: list[float] = []
    try:
        time.sleep(2.0)
        last_sent = 0.0
        sent = 0
        while sent < trials or pending:
            now = time.time()
            if sent < trials and now - last_sent >= 0.7:
                cust, eid = f"{mode}-{sent}", f"{mode}-visit-{sent}"
                t = now_ms()
                producer.send(kafka.raw_topic, key=cust.encode(), value=orjson.dumps({
                    "event_id": eid, "type": "visit", "channel": "web", "occurred_at": t,
                    "customer_id": cust}))
                producer.flush()
                pending[instance_id("quick", cust, eid)] = (t + ABANDON_MS + LATENESS_MS) / 1000
                sent, last_sent = sent + 1, now
            if pending:
                rows = wh.query(
                    f"SELECT instance_id FROM {wh.database}.journey_instances FINAL "
                    "WHERE deleted = 0 AND status = 'abandoned' AND instance_id IN %(ids)s",
                    {"ids": tuple(pending)})
                seen = time.time()
                for (iid,) in rows:
                    delays.append(seen - pending.pop(iid))
            if pending and min(pending.values()) < time.time() - 60:
                raise SystemExit(f"{mode}: no abandonment within 60 s of the deadline")
            time.sleep(0.05)
    finally:
        stop.set()
        wh.close()
        producer.close()
    return delays


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--modes", default="traffic,idle")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_abandon_"))
    (work / "definitions.yaml").write_text(DEFINITIONS)
    with LocalBroker() as broker, LocalClickHouse() as ch:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_prefix="lat",
                            partitions=PARTITIONS)
        ensure_journey_topics(kafka)
        wh_config = WarehouseConfig(backend="server", host=ch.host, port=ch.tcp_port,
                                    database="lat")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
        env.update({
            "JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "JOURNEYS_KAFKA__IDEMPOTENT_PRODUCER": "false",  # Tansu refuses it
            "JOURNEYS_KAFKA__TOPIC_PREFIX": "lat", "JOURNEYS_KAFKA__PARTITIONS": str(PARTITIONS),
            "JOURNEYS_WAREHOUSE__BACKEND": "server", "JOURNEYS_WAREHOUSE__HOST": ch.host,
            "JOURNEYS_WAREHOUSE__PORT": str(ch.tcp_port), "JOURNEYS_WAREHOUSE__DATABASE": "lat",
            "JOURNEYS_APP_ID": "lat-worker", "JOURNEYS_DATA_DIR": str(work / "data"),
            "JOURNEYS_DEFINITIONS_PATH": str(work / "definitions.yaml"),
            "JOURNEYS_ALLOWED_LATENESS_MS": str(LATENESS_MS), "JOURNEYS_FLUSH_INTERVAL_S": "0.2",
        })
        log = (work / "worker.log").open("wb")
        worker = subprocess.Popen([sys.executable, "-m", "stream", "--loglevel", "warning"],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 60  # until the worker has created the schema
            while time.time() < deadline:
                try:
                    connect(wh_config, create_database=False).close()
                    break
                except Exception:
                    time.sleep(0.5)
            time.sleep(5.0)  # group join and recovery
            for mode in args.modes.split(","):
                d = sorted(run_mode(mode, args.trials, kafka, wh_config))
                q = statistics.quantiles(d, n=20)
                print(f"{mode:8s}: {len(d)} journeys; deadline passed -> abandoned row "
                      f"queryable: p50 {statistics.median(d):.2f} s, p95 {q[18]:.2f} s, "
                      f"max {d[-1]:.2f} s (min {d[0]:.2f} s)", flush=True)
        finally:
            os.kill(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(worker.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
