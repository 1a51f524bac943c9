"""CPU µs per row of one file import (`import_file` with a bulk producer on an embedded
broker, or `--dry` without one), for before/after figures of the importer's code.

`--root DIR` runs the code of another checkout (e.g. `git archive main | tar -x -C DIR`),
so two versions are measured back to back on the same machine state.

    .venv/bin/python bench/bench_import_cpu.py events.jsonl
    .venv/bin/python bench/bench_import_cpu.py events.csv --dry --root /tmp/main_src
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--dry", action="store_true", help="validate only, no broker")
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
    with LocalBroker() as broker:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers,
                            topic_prefix=f"cpu{os.getpid()}", partitions=4)
        ensure_journey_topics(kafka)
        producer = TouchpointProducer(kafka, ProducerTuning.for_bulk())
        producer.ensure_available()
        run(producer)


if __name__ == "__main__":
    main()
