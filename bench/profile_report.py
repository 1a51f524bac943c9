"""Read py-spy raw stacks (`py-spy record -f raw`) and print where the CPU goes: per
pipeline stage, and the top functions (inclusive and self), as shares of the samples.

With `--cpu-s` (the process CPU seconds of the run) and `--events`, each stage's share
is also printed as CPU µs per event: samples are taken at a fixed rate on non-idle
threads, so a stage's share of the samples is its share of the CPU time (approximately:
C code that releases the GIL is sampled like Python code).

    BENCH_PYSPY=/tmp/spy .venv/bin/python bench/bench_stream.py --events 100000 --workers 1
    .venv/bin/python bench/profile_report.py /tmp/spy/worker0.txt --cpu-s 48.7 --events 100000
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# first match wins, tested from the innermost frame outwards
STAGES: list[tuple[str, re.Pattern[str]]] = [
    ("validate", re.compile(r"stream/(agents|stages)/validate\.py|journeys/events\.py")),
    ("identity", re.compile(r"stream/(agents|stages)/identity\.py|stream/engine/identity")),
    ("alerts", re.compile(r"stream/(agents|stages)/alert|stream/agents/alerting")),
    ("customers: journeys+sessions", re.compile(r"stream/engine/")),
    ("customers: state, batching", re.compile(r"stream/(agents|stages)/customer")),
    ("sink: ClickHouse rows+insert", re.compile(r"stream/agents/sink\.py|warehouse/")),
    ("envelopes, handovers", re.compile(r"stream/stages/(envelopes|parts|duplicates)|"
                                        r"stream/agents/(context|transport)")),
    ("kafka client (aiokafka)", re.compile(r"aiokafka/")),
    ("faust/mode framework", re.compile(r"faust/|mode/")),
    ("ingest: read+map", re.compile(r"ingest/(readers|mapping)")),
    ("ingest: produce", re.compile(r"ingest/(producer|rdkafka|delivery)|kafka/")),
    ("ingest: import loop", re.compile(r"ingest/importer")),
    ("python startup/imports", re.compile(r"importlib")),
]
# leaf frames that are waits py-spy cannot flag (`_serve`: librdkafka's poll, GIL released)
IDLE = re.compile(r"\b(select|poll|epoll|wait|sleep|_wait_for_tstate_lock|_serve)\b")


def frames_of(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    return [f for f in stack.split(";") if f], int(count)


def short(frame: str) -> str:
    """`name (path/to/file.py:12)` -> `name (file.py)`."""
    m = re.match(r"(.*) \((.*?)(:\d+)?\)$", frame)
    if not m:
        return frame
    return f"{m.group(1)} ({'/'.join(m.group(2).split('/')[-2:])})"


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in STAGES:
            if pattern.search(frame):
                return name
    return "other (asyncio loop, threads)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--cpu-s", type=float, help="process CPU seconds of the run")
    ap.add_argument("--events", type=int, help="events the run processed")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    stages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = idle = 0
    for path in args.files:
        for line in path.read_text(errors="replace").splitlines():
            frames, n = frames_of(line)
            if not frames:
                continue
            if IDLE.search(frames[-1].split(" (")[0]):
                idle += n  # a thread parked in a wait that py-spy did not flag idle
                continue
            total += n
            stages[stage_of(frames)] += n
            for f in {short(f) for f in frames}:
                inclusive[f] += n
            own[short(frames[-1])] += n
    per_event = (args.cpu_s * 1e6 / args.events) if args.cpu_s and args.events else None
    print(f"{total:,} busy samples ({idle:,} in waits left out)")
    print("\nby stage (innermost matching frame):")
    for name, n in stages.most_common():
        us = f"  {per_event * n / total:7.1f} µs/event" if per_event else ""
        print(f"  {100 * n / total:5.1f}%{us}  {name}")
    print(f"\ntop {args.top} inclusive:")
    for f, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print(f"\ntop {args.top} self:")
    for f, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
