"""Side by side (issue #14): the client ceiling, a peer (Quix Streams) and the product
with 1 and 2 workers, on the same broker and the same generated events, in one go.

One Apache Kafka (deploy/local/kafka.py) and one local ClickHouse server for the whole
run. The events are bench/bench_stream.py's (the demo generator, plus one far-future
filler per raw partition); before each contender the same bytes with the same keys are
produced to a raw topic of its own (`side-<name>.touchpoints`, so no contender reads
another's offsets or internal topics; producing is not timed). Contenders, one after the
other, each timed from its process start until it has consumed everything:

- ceiling: one process, aiokafka `getmany` over every partition + `orjson.loads` of
  every record, no work (the most a Python Kafka consumer does on this machine);
- quix: Quix Streams (bench/side_quix.py, in `.venv-quix`) re-keying by customer and
  counting events per 30-minute inactivity session in its RocksDB state store;
- product-1w / product-2w: `python -m stream` workers (bench_stream.run_product), until
  every stage committed everything: sessions, journeys and touchpoints in ClickHouse,
  checked against the reference (exactness is printed, never asserted).

Prints, per contender: events/s (from process start, and from its first record or
commit), CPU µs per event (all its processes, /proc/PID/stat, every thread, start-up
included), both as ratios to the ceiling, and the machine's load during its run (the
1-minute load average, mean and max, and how many of the cores were busy). `--plot
PATH` writes a PNG bar chart of the throughput (matplotlib, the `bench` extra).

    .venv/bin/python bench/bench_side_by_side.py --events 200000 --plot side.png
    .venv/bin/python bench/bench_side_by_side.py --events 20000 --contenders ceiling,quix

Quix Streams pins older pydantic/confluent-kafka than the product, so it lives in its
own venv:  python3.11 -m venv .venv-quix && .venv-quix/bin/pip install quixstreams
Run it alone on the machine: every figure is a comparison under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

# -- the ceiling: a child process of this script, run before the bench's own imports
# (the product's, the reference's) so that its CPU is the client's alone


async def _drain(bootstrap: str, topic: str, partitions: int, expected: int,
                 timeout: float) -> dict[str, Any]:
    """Read every partition from the start until `expected` records, parsing each."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        seen, first, loads = 0, 0.0, orjson.loads
        deadline = time.monotonic() + timeout
        while seen < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                if records and not first:
                    first = time.time()
                for r in records:
                    loads(r.value)
                seen += len(records)
        return {"events": seen, "first": first, "done": time.time(),
                "cpu_s": sum(os.times()[:2]), "complete": seen >= expected}
    finally:
        await consumer.stop()


if __name__ == "__main__" and sys.argv[1:2] == ["--child-ceiling"]:
    _bootstrap, _topic, _parts, _want, _limit = sys.argv[2:7]
    print(json.dumps(asyncio.run(_drain(_bootstrap, _topic, int(_parts), int(_want),
                                        float(_limit)))), flush=True)
    sys.exit(0)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_stream import (  # noqa: E402
    LATENESS_MS,
    broker,
    ensure_topics,
    events,
    fillers,
    print_exactness,
    produce,
    references,
    run_product,
)

from deploy.local.clickhouse import LocalClickHouse  # noqa: E402
from journeys.events import parse_occurred_at  # noqa: E402
from journeys.settings import KafkaConfig  # noqa: E402

CONTENDERS = ("ceiling", "quix", "product-1w", "product-2w")
QUIX_PYTHON = ROOT / ".venv-quix" / "bin" / "python"


class MachineLoad:
    """Samples the 1-minute load average every second and counts busy CPU time of the
    whole machine (/proc/stat) between start() and stop()."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu0 = self._cpu1 = (0, 0)
        self._t0 = self._t1 = 0.0

    @staticmethod
    def _stat() -> tuple[int, int]:
        """(busy, total) jiffies of all cores."""
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            self._stop.wait(1.0)

    def start(self) -> MachineLoad:
        self._cpu0, self._t0 = self._stat(), time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._cpu1, self._t1 = self._stat(), time.monotonic()

    @property
    def busy_cores(self) -> float:
        """Average number of cores busy (anything on the machine) during the run."""
        busy, total = (self._cpu1[0] - self._cpu0[0]), (self._cpu1[1] - self._cpu0[1])
        return (os.cpu_count() or 1) * busy / total if total else 0.0


@dataclass
class Result:
    name: str
    events: int
    wall_s: float  # process start -> everything consumed
    first_s: float | None  # process start -> first record (product: first raw commit)
    cpu_s: float
    load: MachineLoad
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.wall_s

    @property
    def steady_rate(self) -> float:
        steady = self.wall_s - (self.first_s or 0.0)
        return self.events / steady if steady > 0 else float("nan")

    @property
    def us_per_event(self) -> float:
        return self.cpu_s * 1e6 / self.events


# -- contenders as child processes ------------------------------------------------

def _child_result(cmd: list[str], timeout: float, log: Path) -> tuple[float, dict[str, Any]]:
    """Run a contender process; (its start, epoch s) and the JSON line it printed last."""
    started = time.time()
    with log.open("wb") as err:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                              timeout=timeout, check=False)
    lines = [x for x in proc.stdout.decode().splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"{cmd[1]} failed (exit {proc.returncode}); see {log}")
    return started, json.loads(lines[-1])


def _from_child(name: str, n: int, started: float, got: dict[str, Any],
                load: MachineLoad, note: str = "") -> Result:
    if not got.get("complete"):
        print(f"  WARNING: {name} did not see every event ({got['events']:,}); "
              "its figures cover only what it saw", flush=True)
    first = got["first"] - started if got.get("first") else None
    return Result(name, n, got["done"] - started, first, got["cpu_s"], load, note,
                  extra=got)


def run_ceiling(kafka: KafkaConfig, n: int, expected: int, work: Path,
                timeout: float) -> Result:
    load = MachineLoad().start()
    try:
        started, got = _child_result(
            [sys.executable, __file__, "--child-ceiling", kafka.bootstrap_servers,
             kafka.raw_topic, str(kafka.partitions), str(expected), str(timeout)],
            timeout + 60, work / "ceiling.log")
    finally:
        load.stop()
    return _from_child("ceiling", n, started, got, load, "aiokafka getmany + orjson.loads")


def run_quix(kafka: KafkaConfig, n: int, expected: int, work: Path, python: Path,
             timeout: float) -> Result:
    load = MachineLoad().start()
    try:
        started, got = _child_result(
            [str(python), str(ROOT / "bench" / "side_quix.py"), kafka.bootstrap_servers,
             kafka.raw_topic, str(expected), str(work / "quix-state"), str(timeout)],
            timeout + 60, work / "quix.log")
    finally:
        load.stop()
    if got.get("late"):
        print(f"  WARNING: quix dropped {got['late']:,} events as late (their windows had "
              "closed): it did less work than the product for them", flush=True)
    return _from_child("quix", n, started, got, load,
                       f"group_by customer + session windows: {got['sessions']:,} sessions "
                       f"closed, {got.get('late', 0):,} late")


def run_workers(kafka: KafkaConfig, ch: Any, workers: int, n: int, work: Path,
                refs: dict[str, Any], timeout: float) -> Result:
    name = f"product-{workers}w"
    load = MachineLoad().start()
    try:
        run = run_product(kafka, "kafka", ch, workers, work / name,
                          database=name.replace("-", "_"), app_id=f"side-{name}",
                          timeout=timeout)
    finally:
        load.stop()
    print(f"  {name}: {len(run.sessions):,} sessions, {len(run.instances):,} journey "
          f"instances, {run.touchpoints:,} touchpoints, {run.late:,} late")
    print_exactness(refs, run.sessions, run.instances)
    return Result(name, n, run.total_s, run.first_s, run.cpu_s, load,
                  f"{workers} worker(s), raw -> ClickHouse")


# -- report ---------------------------------------------------------------------------

def report(results: list[Result], partitions: int) -> None:
    ceiling = next((r for r in results if r.name == "ceiling"), None)
    print(f"\nside by side: {results[0].events:,} events, {partitions} partitions, "
          f"Apache Kafka, {os.cpu_count()} cores")
    print(f"{'contender':12s} {'events/s':>9s} {'steady/s':>9s} {'CPU µs/ev':>9s} "
          f"{'rate×ceil':>9s} {'CPU×ceil':>9s} {'load avg':>11s} {'busy cores':>10s}")
    for r in results:
        rate_x = f"{r.rate / ceiling.rate:.3f}" if ceiling else "-"
        cpu_x = f"{r.us_per_event / ceiling.us_per_event:.1f}" if ceiling else "-"
        loads = r.load.samples or [0.0]
        print(f"{r.name:12s} {r.rate:9,.0f} {r.steady_rate:9,.0f} {r.us_per_event:9,.1f} "
              f"{rate_x:>9s} {cpu_x:>9s} {sum(loads) / len(loads):5.2f}/{max(loads):5.2f} "
              f"{r.load.busy_cores:10.2f}   {r.note}")
    print("events/s: from process start (start-up included) until everything was consumed "
          "(the product: committed by every stage, in ClickHouse); steady/s: from the first "
          "record (the product: its first raw commit). load avg: 1-minute, mean/max over the "
          "run; busy cores: the whole machine (broker and ClickHouse included).")


def plot(results: list[Result], path: Path, partitions: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    names = [r.name for r in results]
    colours = ["#888888" if r.name == "ceiling" else "#4c72b0" if r.name == "quix"
               else "#dd8452" for r in results]
    x = list(range(len(results)))
    for offset, rates, hatch, label in (
            (-0.2, [r.rate for r in results], "", "from process start"),
            (0.2, [r.steady_rate for r in results], "//", "from the first record/commit")):
        bars = left.bar([i + offset for i in x], rates, width=0.4, color=colours,
                        hatch=hatch, edgecolor="white", label=label)
        for b, rate in zip(bars, rates, strict=True):
            left.annotate(f"{rate:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                          ha="center", va="bottom", fontsize=8)
    left.set_xticks(x, names)
    left.set_yscale("log")
    left.set_ylabel("events/s (log scale)")
    left.set_title("throughput (plain: from start; hatched: steady)")
    bars = right.bar(names, [r.us_per_event for r in results], color=colours)
    right.set_yscale("log")
    right.set_ylabel("CPU µs per event (log scale)")
    right.set_title("CPU per event, all processes of the contender")
    for b, r in zip(bars, results, strict=True):
        right.annotate(f"{r.us_per_event:,.1f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                       ha="center", va="bottom", fontsize=9)
    loads = [s for r in results for s in r.load.samples] or [0.0]
    fig.suptitle(f"{results[0].events:,} events, {partitions} partitions, Apache Kafka, "
                 f"{os.cpu_count()} cores, load avg {min(loads):.1f}–{max(loads):.1f} "
                 "(bench/bench_side_by_side.py)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


# -- main -----------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--contenders", default=",".join(CONTENDERS),
                    help=f"comma-separated, in order; of {', '.join(CONTENDERS)}")
    ap.add_argument("--plot", type=Path, help="write a PNG bar chart of the throughput here")
    ap.add_argument("--quix-python", type=Path, default=QUIX_PYTHON,
                    help="the interpreter with quixstreams installed")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds of quiet before each contender")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per contender, seconds")
    args = ap.parse_args()
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        ap.error(f"unknown contender(s) {sorted(unknown)}; choose from {CONTENDERS}")
    if "quix" in args.contenders and not args.quix_python.exists():
        ap.error(f"{args.quix_python} not found: python3.11 -m venv .venv-quix && "
                 ".venv-quix/bin/pip install quixstreams   (or leave quix out of --contenders)")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            ap.error("--plot needs matplotlib: .venv/bin/pip install -e '.[bench]'")
    return args


def main() -> None:
    args = parse_args()
    print(f"generating {args.events:,} events …", flush=True)
    evs = events(args.events, args.seed)
    payloads = [orjson.dumps(e) for e in evs]
    end = max(parse_occurred_at(e["occurred_at"]) for e in evs) + 3 * 86_400_000
    fill = fillers(end, args.partitions)
    refs = references(evs, end - LATENESS_MS) if any(
        c.startswith("product") for c in args.contenders) else {}
    n, expected = len(payloads), len(payloads) + len(fill)
    work = Path(tempfile.mkdtemp(prefix="bench_side_"))
    results: list[Result] = []
    with broker("kafka") as b, LocalClickHouse() as ch:
        for name in args.contenders:
            kafka = KafkaConfig(bootstrap_servers=b.bootstrap_servers,
                                topic_prefix=f"side-{name}", partitions=args.partitions)
            ensure_topics(kafka)
            secs = asyncio.run(produce(kafka, payloads, fill))
            time.sleep(args.settle)
            load = float(Path("/proc/loadavg").read_text().split()[0])
            print(f"\n{name}: produced {n:,} events (+{len(fill)} fillers) to "
                  f"{kafka.raw_topic} in {secs:.1f} s; load average {load:.2f}", flush=True)
            if name == "ceiling":
                r = run_ceiling(kafka, n, expected, work, args.timeout)
            elif name == "quix":
                r = run_quix(kafka, n, expected, work, args.quix_python, args.timeout)
            else:
                r = run_workers(kafka, ch, int(name[-2]), n, work, refs, args.timeout)
            print(f"  {name}: {r.rate:,.0f} events/s, {r.us_per_event:,.1f} CPU µs per event",
                  flush=True)
            results.append(r)
    report(results, args.partitions)
    if args.plot:
        plot(results, args.plot, args.partitions)
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
