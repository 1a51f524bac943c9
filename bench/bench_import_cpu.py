"""CPU µs per row of one file import (`import_file` with a bulk producer on an embedded
broker, or `--dry` without one), for before/after figures of the importer's code.

`--root DIR` runs the code of another checkout (e.g. `git archive main | tar -x -C DIR`),
so two versions are measured back to back on the same machine state.

    .venv/bin/python bench/bench_import_cpu.py events.jsonl
    .venv/bin/python bench/bench_import_cpu.py events.csv --dry --root /tmp/main_src
    .venv/bin/python bench/bench_import_cpu.py events.jsonl --cli   # `journeys ingest`

`--cli` runs the whole command (`python -m deploy.cli ingest FILE`, by default in event-
time order) as a child process against the embedded broker: its CPU includes start-up.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cli(path: Path, root: str, broker_cls: Any, ensure: Any, config: Any) -> None:
    """`journeys ingest FILE` in a child process; its CPU from RUSAGE_CHILDREN."""
    with broker_cls() as broker:
        kafka = config(bootstrap_servers=broker.bootstrap_servers,
                       topic_prefix=f"cli{os.getpid()}", partitions=4)
        ensure(kafka)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYS_")}
        env.update({"JOURNEYS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                    "JOURNEYS_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
                    "JOURNEYS_KAFKA__PARTITIONS": "4", "PYTHONPATH": root})
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "deploy.cli", "ingest", str(path)],
                              cwd=root, env=env, capture_output=True, text=True, check=True)
        secs = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    rows = sum(1 for _ in path.open("rb")) - (1 if path.suffix == ".csv" else 0)
    print(f"journeys ingest {path.name} ({root}): {cpu_s * 1e6 / rows:.1f} µs CPU per row "
          f"(start-up included), {rows / secs:,.0f} rows/s wall (load average "
          f"{os.getloadavg()[0]:.1f}); {done.stdout.strip().splitlines()[-1]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--dry", action="store_true", help="validate only, no broker")
    ap.add_argument("--cli", action="store_true", help="time `journeys ingest FILE`")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    from deploy.local.broker import LocalBroker
    from ingest.importer import ImportOptions, import_file
    from ingest.producer import TouchpointProducer
    from ingest.tuning import ProducerTuning
    from journeys.settings import KafkaConfig
    from journeys.topics import ensure_journey_topics

    def run(producer: TouchpointProducer | None) -> None:
        with tempfile.TemporaryDirectory() as rejects:
            opts = ImportOptions(rejects_path=Path(rejects) / "r.jsonl")
            c0, t0 = cpu(), time.perf_counter()
            report = import_file(args.file, producer, opts)
            if producer is not None:
                producer.close()
            c, t = cpu() - c0, time.perf_counter() - t0
        print(f"{args.file.name} ({args.root}): {report.rows:,} rows, {report.rejected:,} "
              f"rejected; {c * 1e6 / report.rows:.1f} µs CPU per row; {report.rows / t:,.0f} "
              f"rows/s wall (load average {os.getloadavg()[0]:.1f})")

    if args.dry:
        return run(None)
    if args.cli:
        return cli(args.file, args.root, LocalBroker, ensure_journey_topics, KafkaConfig)
    with LocalBroker() as broker:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers,
                            topic_prefix=f"cpu{os.getpid()}", partitions=4)
        ensure_journey_topics(kafka)
        producer = TouchpointProducer(kafka, ProducerTuning.for_bulk())
        producer.ensure_available()
        run(producer)


if __name__ == "__main__":
    main()
