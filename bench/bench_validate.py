"""CPU cost of the validate stage's pure logic per event (no Kafka, no warehouse).

Generated demo events as raw JSON records, through `ValidateStage.prepare` in polls of
`--batch` records (parse, validate, lateness, routing, by-identity envelopes), plus the
bare `EventValidator.parse`. Process CPU time (getrusage), so the figure holds on a
shared machine; the best of `--repeat` runs.

    .venv/bin/python bench/bench_validate.py                # ~20 s
    .venv/bin/python bench/bench_validate.py --events 50000 --repeat 5
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.generator import GeneratorConfig, generate_events  # noqa: E402
from journeys.events import EventValidator  # noqa: E402
from stream.stages.validate import ValidateStage  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    config = GeneratorConfig(seed=3, start_ms=1_772_323_200_000, duration_ms=30 * 86_400_000,
                             visitors_per_hour=20_000.0, max_events=args.events)
    raws = [orjson.dumps(e) for e in generate_events(config)]
    records = [("raw", i % 4, i // 4, None, v) for i, v in enumerate(raws)]
    validator = EventValidator()

    best_parse = best_stage = float("inf")
    for _ in range(args.repeat):
        c0 = cpu()
        for v in raws:
            validator.parse(v)
        best_parse = min(best_parse, cpu() - c0)
        stage = ValidateStage(validator, ("product_view", "signup_start"), 8,
                              allowed_lateness_ms=300_000, idle_after_ms=60_000)
        for p in range(4):
            stage.assign(p, None, 4, 0)
        c0 = cpu()
        for i in range(0, len(records), args.batch):
            stage.prepare(records[i:i + args.batch], 1_800_000_000_000, set())
        best_stage = min(best_stage, cpu() - c0)
    n = len(raws)
    print(f"{n:,} events, best of {args.repeat}")
    print(f"  EventValidator.parse:  {best_parse * 1e6 / n:6.2f} µs CPU per event")
    print(f"  ValidateStage.prepare: {best_stage * 1e6 / n:6.2f} µs CPU per event "
          f"(batches of {args.batch:,})")


if __name__ == "__main__":
    main()
