"""The customer stage's pure work per event, in process: CPU of `CustomerStage.prepare`
and of encoding its table values, with and without the decoded-value cache.

The stream bench's events (the demo generator, bench/bench_stream.py's config) go
through the pure stages the way a worker hands them over, without Kafka or ClickHouse:
the validate stage in polls of up to 10,000 raw records, the identity stage in takes of
up to 64 envelopes, the customer stage in takes of up to 64 envelopes cut into chunks
of 512 KiB (stream.agents.context.byte_chunks), handovers read back as the second lane,
table values kept in dicts. Each stage's `prepare` is timed with process CPU time, so
the figures hold up on a loaded machine better than wall time. `--cache` sets the
number of customers kept decoded (0: decode every touched customer every batch, as
before the cache); `--compare` runs both and checks that every row and table value is
the same. `--worker-gc` sets the cyclic garbage collector as a worker does
(stream.gc_tuning); without it Python's defaults apply. `--profile FILE`
writes a cProfile of the customer stage's prepare calls.

    .venv/bin/python bench/bench_customer_stage.py --events 50000 --compare
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_stream import events as generated  # noqa: E402
from bench.bench_stream import fillers  # noqa: E402
from journeys.definitions import load_definitions  # noqa: E402
from journeys.events import EventValidator, parse_occurred_at  # noqa: E402
from journeys.settings import DEFAULT_CHANNELS, DEFAULT_STATE_CACHE_CUSTOMERS  # noqa: E402
from stream.agents.context import byte_chunks  # noqa: E402
from stream.stages.customer_state import HANDOVER_RECORDS, RECORDS  # noqa: E402
from stream.stages.customers import CustomerStage  # noqa: E402
from stream.stages.identity import IdentityStage  # noqa: E402
from stream.stages.validate import ValidateStage  # noqa: E402

POLL = 10_000  # raw records per validate poll (JOURNEYS_FLUSH_MAX_EVENTS, default 10,000)
TAKE = 64  # envelopes per take (stream.agents.app.ENVELOPES_PER_BATCH)
LATENESS_MS = 300_000
GENERATION = 1_800_000_000 * 10**9


class Topic:
    """A topic's partitions in memory and a consumer's position in each."""

    def __init__(self, partitions: int) -> None:
        self.logs: list[list[bytes]] = [[] for _ in range(partitions)]
        self.pos = [0] * partitions

    def take(self, limit: int) -> list[tuple[int, int, bytes]]:
        """Up to `limit` records, partitions round-robin, each in log order."""
        out: list[tuple[int, int, bytes]] = []
        while len(out) < limit and self:
            for p, log in enumerate(self.logs):
                if self.pos[p] < len(log) and len(out) < limit:
                    out.append((p, self.pos[p], log[self.pos[p]]))
                    self.pos[p] += 1
        return out

    def __bool__(self) -> bool:
        return any(pos < len(log) for pos, log in zip(self.pos, self.logs, strict=True))


def run(raw: list[list[bytes]], partitions: int, cache: int,
        profile: cProfile.Profile | None) -> dict[str, Any]:
    defs = load_definitions(None)
    wall = int(time.time() * 1000)
    validate = ValidateStage(EventValidator(DEFAULT_CHANNELS),
                             {d.steps[0] for d in defs.journeys}, partitions,
                             allowed_lateness_ms=LATENESS_MS, idle_after_ms=10**12)
    for p in range(len(raw)):
        validate.assign(p, None, len(raw), wall)
    identity = IdentityStage(partitions, partitions)
    customers = CustomerStage(defs, partitions=partitions, cache_customers=cache)
    customers.generation = GENERATION  # (a clock reading otherwise: in values and versions)
    source = Topic(len(raw))
    source.logs = raw
    by_identity, by_customer, handovers = Topic(partitions), Topic(partitions), Topic(partitions)
    aliases: dict[bytes, bytes] = {}
    states: dict[bytes, bytes] = {}
    rows: dict[str, Any] = {}
    cpu = {"validate": 0.0, "identity": 0.0, "customers": 0.0}

    def timed(stage: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            if stage == "customers" and profile is not None:
                return profile.runcall(call, *args, **kwargs)
            return call(*args, **kwargs)
        finally:
            cpu[stage] += time.process_time() - started

    def store(into: dict[bytes, bytes], written: dict[bytes, tuple[int, bytes | None]]) -> None:
        for key, (_p, value) in written.items():
            if value is None:
                into.pop(key, None)
            else:
                into[key] = value

    while source or by_identity or by_customer or handovers:
        if source:
            records = [("raw", p, off, None, v) for p, off, v in source.take(POLL)]
            caught_up = {p for p in range(len(raw)) if source.pos[p] >= len(raw[p])}
            vb = timed("validate", validate.prepare, records, wall, caught_up)
            for p, value in vb.envelopes.messages():
                by_identity.logs[p].append(value)
        if by_identity:
            took = by_identity.take(TAKE)
            ib = timed("identity", identity.prepare, took, aliases.get)
            for p, value in ib.envelopes.messages():
                by_customer.logs[p].append(value)
            store(aliases, ib.states)
        for topic, lane in ((by_customer, RECORDS), (handovers, HANDOVER_RECORDS)):
            if not topic:
                continue
            for chunk in byte_chunks(list(topic.take(TAKE))):
                cb = timed("customers", customers.prepare, chunk, states.get, wall, lane=lane)
                for p, value in cb.handovers.messages():
                    handovers.logs[p].append(value)
                store(states, cb.states)
                for r in [*cb.session_rows, *cb.instance_rows, *cb.retractions]:
                    rows[f"{type(r).__name__}:{getattr(r, 'session_id', None) or r.instance_id}"
                         f":{r.version}"] = r
    return {"cpu": cpu, "states": states, "rows": rows, "batches": customers.batches,
            "cache": customers.cache}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache", type=int, default=DEFAULT_STATE_CACHE_CUSTOMERS)
    ap.add_argument("--compare", action="store_true",
                    help="also run without the cache and check the outputs are identical")
    ap.add_argument("--profile", type=Path, help="cProfile of the customer stage's prepare")
    ap.add_argument("--worker-gc", action="store_true",
                    help="the worker's garbage-collector settings (stream.gc_tuning)")
    args = ap.parse_args()
    if args.worker_gc:
        from stream.gc_tuning import freeze_startup, tune_gc

        tune_gc()
        freeze_startup()
    evs = generated(args.events, args.seed)
    raw: list[list[bytes]] = [[] for _ in range(args.partitions)]
    for i, e in enumerate(evs):
        raw[i % 997 % args.partitions].append(orjson.dumps(e))
    end = max(parse_occurred_at(e["occurred_at"]) for e in evs) + 3 * 86_400_000
    for p, e in fillers(end, args.partitions):
        raw[p].append(orjson.dumps(e))
    print(f"{len(evs):,} events, {args.partitions} partitions, "
          f"{'worker' if args.worker_gc else 'default'} GC, load average "
          f"{os.getloadavg()[0]:.2f}")
    results = []
    for cache in ([args.cache, 0] if args.compare else [args.cache]):
        profile = cProfile.Profile() if args.profile and cache == args.cache else None
        res = run([list(r) for r in raw], args.partitions, cache, profile)
        if profile is not None:
            profile.dump_stats(args.profile)
        c = res["cache"]
        per = {k: v * 1e6 / len(evs) for k, v in res["cpu"].items()}
        print(f"cache {cache:>6,}: customers {per['customers']:6.1f} us CPU/event "
              f"({res['batches']} prepare calls; hits {c.hits:,}, misses {c.misses:,}, "
              f"evictions {c.evictions:,}); identity {per['identity']:5.1f}; "
              f"validate {per['validate']:5.1f}")
        results.append(res)
    if args.compare:
        a, b = results
        same = a["states"] == b["states"] and a["rows"] == b["rows"]
        print(f"outputs with and without the cache: {'identical' if same else 'DIFFERENT'} "
              f"({len(a['rows']):,} row versions, {len(a['states']):,} table values)")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
