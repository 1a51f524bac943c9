"""File import throughput (rows/s per format), CPU per row, and memory.

Starts its own embedded broker (127.0.0.1, stopped at the end), writes generated
files, and imports each in a fresh child process so CPU and peak RSS are the
import's alone. A 1M-row CSV (`--memory-rows`) shows the memory stays flat: RSS is
sampled after every chunk and printed at 10/50/100% of the file; `--jobs 2` over two
files shows the multi-process rate.

    .venv/bin/python bench/bench_import.py              # ~5–6 minutes, bounded
    .venv/bin/python bench/bench_import.py --memory-rows 2000000   # a ~350 MiB CSV
    .venv/bin/python bench/bench_import.py --client kafka-python --memory-rows 0  # before
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
from ingest.generator import GeneratorConfig, generate_events  # noqa: E402
from ingest.writers import write_events  # noqa: E402
from journeys.settings import KafkaConfig  # noqa: E402
from journeys.topics import ensure_journey_topics  # noqa: E402


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
    from ingest.producer import TouchpointProducer
    from ingest.tuning import ProducerTuning
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
    tuning = ProducerTuning.for_bulk().with_overrides({"client": args.client})
    timed = args.client == "kafka-python"  # its CPU share is measured (Python threads)
    producer = TouchpointProducer(kafka, tuning, factory=TimedProducer if timed else None)
    producer.ensure_available()
    sender = (next(t for t in threading.enumerate() if isinstance(t, Sender)) if timed
              else threading.current_thread())
    io0 = _cpu(os.getpid(), sender.native_id)
    progress = [0]  # rows imported so far, read by the sampler
    samples: list[tuple[int, float]] = []  # (rows, RSS) every 20 ms: spikes included
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            samples.append((progress[0], _rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    report = import_file(Path(args.files[0]), producer,
                         ImportOptions(rejects_path=rejects / "r.jsonl"),
                         on_progress=lambda p: progress.__setitem__(0, p.rows))
    stop.set()
    sampler.join()
    io_cpu = _cpu(os.getpid(), sender.native_id) - io0 if timed else 0.0
    producer.close()
    secs = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    print(orjson.dumps({
        "rows": report.rows, "accepted": report.accepted, "rows_per_s": report.rows / secs,
        "cpu_pct": 100 * cpu / secs, "cpu_us_per_row": cpu * 1e6 / report.rows,
        "producer_share_pct": 100 * (io_cpu + TimedProducer.send_cpu) / cpu if timed else 0,
        "max_rss_mb": _peak_rss_mb(),
        "rss_peak_by_part": {f"{lo}–{hi}%": max((m for n, m in samples
                                                 if lo <= 100 * n / report.rows <= hi),
                                                default=0.0)
                             for lo, hi in ((0, 10), (10, 50), (50, 100))},
    }).decode())


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE") / 2**20


def _peak_rss_mb() -> float:
    """VmHWM: this process image's peak RSS (ru_maxrss survives exec on Linux and would
    report the parent's size at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peaks(r: dict[str, Any]) -> str:
    """Peak RSS over the first 10%, 10–50% and 50–100% of the rows: equal = flat."""
    parts = ", ".join(f"{k} {v:.0f}" for k, v in r["rss_peak_by_part"].items())
    return f"peak RSS by part of the file: {parts} MiB (process peak {r['max_rss_mb']:.0f})"


CLIENT = ["confluent-kafka"]  # set from --client in main()


def run_child(files: list[Path], kafka: KafkaConfig, jobs: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--bootstrap", kafka.bootstrap_servers,
           "--prefix", kafka.topic_prefix, "--jobs", str(jobs), "--client", CLIENT[0],
           *map(str, files)]
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
    parser.add_argument("--client", choices=("confluent-kafka", "kafka-python"),
                        default="confluent-kafka", help="the producer client (before/after)")
    parser.add_argument("--memory-rows", type=int, default=1_000_000,
                        help="rows of the big CSV for the flat-memory run (0: skip it)")
    args = parser.parse_args()
    if args.child:
        return child(args)
    CLIENT[0] = args.client
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
                share = (f", kafka-python {r['producer_share_pct']:.0f}% of it"
                         if args.client == "kafka-python" else "")
                print(f"{fmt:>7} ({size:5.0f} MiB): {r['rows_per_s']:>8,.0f} rows/s | "
                      f"{r['cpu_us_per_row']:.1f} µs CPU per row | CPU {r['cpu_pct']:.0f}% of "
                      f"a core{share} | {_peaks(r)}")
                path.unlink()
            if args.memory_rows:
                path = make("big.csv", args.memory_rows, seed=2)
                r = run_child([path], kafka)
                print(f"csv {r['rows']:,} rows ({path.stat().st_size / 2**20:5.0f} MiB): "
                      f"{r['rows_per_s']:>8,.0f} rows/s | {_peaks(r)} (chunks of 10k rows, "
                      "≤ 2 unconfirmed)")
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
