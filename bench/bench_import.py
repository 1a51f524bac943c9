"""File import throughput (rows/s per format), kafka-python's CPU share, and memory.

Starts its own embedded broker (127.0.0.1, stopped at the end), writes generated
files, and imports each in a fresh child process so CPU and peak RSS are the
import's alone. A CSV 4× larger shows the memory stays flat; `--jobs 2` over two files
shows the multi-process rate.

    .venv/bin/python bench/bench_import.py              # ~2–3 minutes, bounded
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

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_collector import TimedProducer, _cpu  # noqa: E402

from deploy.local.broker import LocalBroker  # noqa: E402
from deploy.topics import ensure_journey_topics  # noqa: E402
from ingest.generator import GeneratorConfig, generate_events  # noqa: E402
from ingest.writers import write_events  # noqa: E402
from journeys.settings import KafkaConfig  # noqa: E402


def child(args: argparse.Namespace) -> None:
    """One import in this process; prints a JSON line of figures."""
    kafka = KafkaConfig(bootstrap_servers=args.bootstrap, topic_prefix=args.prefix,
                        partitions=4)
    with tempfile.TemporaryDirectory(prefix="bench-rejects-") as rejects:
        _child(args, kafka, Path(rejects))


def _child(args: argparse.Namespace, kafka: KafkaConfig, rejects: Path) -> None:
    import threading

    from kafka.producer.sender import Sender

    from ingest.importer import ImportOptions, import_file
    from ingest.mapping import ColumnMapping
    from ingest.parallel import import_files
    from ingest.producer import ProducerTuning, TouchpointProducer
    from journeys.settings import CollectorSettings

    started, cpu0 = time.perf_counter(), time.process_time()
    if len(args.files) > 1:
        reports = import_files([Path(f) for f in args.files], CollectorSettings(kafka=kafka),
                               ColumnMapping(), rejects_dir=rejects, jobs=args.jobs)
        secs = time.perf_counter() - started
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        rows = sum(r.rows for r in reports)
        print(orjson.dumps({"rows": rows, "rows_per_s": rows / secs,
                            "cpu_pct": 100 * (kids.ru_utime + kids.ru_stime) / secs}).decode())
        return
    producer = TouchpointProducer(kafka, ProducerTuning.for_bulk(), factory=TimedProducer)
    producer.ensure_available()
    sender = next(t for t in threading.enumerate() if isinstance(t, Sender))
    io0 = _cpu(os.getpid(), sender.native_id)
    rss: list[float] = []  # sampled after each chunk: the steady state, not a spike
    report = import_file(Path(args.files[0]), producer,
                         ImportOptions(rejects_path=rejects / "r.jsonl"),
                         on_progress=lambda _: rss.append(_rss_mb()))
    io_cpu = _cpu(os.getpid(), sender.native_id) - io0
    producer.close()
    secs = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    print(orjson.dumps({
        "rows": report.rows, "accepted": report.accepted, "rows_per_s": report.rows / secs,
        "cpu_pct": 100 * cpu / secs,
        "producer_share_pct": 100 * (io_cpu + TimedProducer.send_cpu) / cpu,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_first_mb": rss[0], "rss_max_mb": max(rss),
    }).decode())


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE") / 2**20


def run_child(files: list[Path], kafka: KafkaConfig, jobs: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--bootstrap", kafka.bootstrap_servers,
           "--prefix", kafka.topic_prefix, "--jobs", str(jobs), *map(str, files)]
    out = subprocess.run(cmd, capture_output=True, timeout=900, check=True).stdout
    return orjson.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--rows", type=int, default=200_000, help="rows per file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--skip-memory", action="store_true", help="skip the 4× CSV run")
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(f"machine: {os.cpu_count()} CPUs; broker: embedded Tansu; {args.rows:,} rows/file")
    print("load average before: {:.2f} {:.2f} {:.2f} (other load skews the figures)".format(
        *os.getloadavg()))
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))

    def make(name: str, rows: int, seed: int = 1) -> Path:
        path = work / name
        write_events(generate_events(GeneratorConfig(
            seed=seed, start_ms=1_772_323_200_000, max_events=rows, duration_ms=30 * 86_400_000,
            visitors_per_hour=2000)), path)
        return path

    try:
        with LocalBroker() as broker:
            kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers,
                                topic_prefix=f"benchimp{os.getpid()}", partitions=4)
            ensure_journey_topics(kafka)
            for fmt in ("csv", "jsonl", "parquet"):
                path = make(f"events.{fmt}", args.rows)
                r = run_child([path], kafka)
                size = path.stat().st_size / 2**20
                print(f"{fmt:>7} ({size:5.0f} MiB): {r['rows_per_s']:>8,.0f} rows/s | CPU "
                      f"{r['cpu_pct']:.0f}% of a core, kafka-python {r['producer_share_pct']:.0f}"
                      f"% of it | RSS {r['rss_first_mb']:.0f}→{r['rss_max_mb']:.0f} MiB "
                      f"(peak {r['max_rss_mb']:.0f})")
                path.unlink()
            if not args.skip_memory:
                path = make("big.csv", args.rows * 4, seed=2)
                r = run_child([path], kafka)
                print(f"csv ×4 ({path.stat().st_size / 2**20:5.0f} MiB): {r['rows_per_s']:>8,.0f}"
                      f" rows/s | RSS {r['rss_first_mb']:.0f}→{r['rss_max_mb']:.0f} MiB (peak "
                      f"{r['max_rss_mb']:.0f}; chunks of 10k rows, ≤ 2 unconfirmed)")
                path.unlink()
            parts = [make(f"part{i}.jsonl", args.rows // 2, seed=10 + i) for i in range(2)]
            r = run_child(parts, kafka, jobs=2)
            print(f"jsonl, 2 files, --jobs 2: {r['rows_per_s']:>8,.0f} rows/s | CPU "
                  f"{r['cpu_pct']:.0f}% (sum of both processes)")
    finally:
        for f in work.glob("*"):
            f.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
