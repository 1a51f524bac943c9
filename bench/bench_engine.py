"""Pure journey-engine throughput (events/s) and state size (bytes per open journey).

Drives stream.engine.journeys the way a worker does: synthetic multi-channel purchase
and onboarding traffic for many customers, arriving shuffled within the allowed
lateness and with duplicates, in batches grouped by customer, watermark from an
SourceClock, each touched customer's state loaded from and written back to orjson bytes
(the Faust table round trip). No Kafka, no warehouse: this is the CPU cost of the
semantics alone, one core.

    .venv/bin/python bench/bench_engine.py            # ~10-30 s
    .venv/bin/python bench/bench_engine.py --events 50000 --no-bytes
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from journeys.definitions import load_definitions  # noqa: E402
from stream.engine.journeys import CustomerJourneys, JourneyEngine  # noqa: E402
from stream.eventtime.watermarks import SourceClock  # noqa: E402

BASE = 1_767_225_600_000  # 2026-01-01
MIN = 60_000
CHANNELS = ("web", "app", "email", "store", "call_center", "chat", "ads")
PURCHASE = ("product_view", "add_to_cart", "cart", "shipping_details", "payment_details",
            "purchase")
OTHER = ("support_chat", "error_page", "page_view", "search", "signup_start",
         "signup_complete", "profile_complete", "first_order")


@dataclass(frozen=True, slots=True)
class Ev:
    event_id: str
    type: str
    channel: str
    occurred_at: int
    customer: str


def traffic(n_events: int, n_customers: int, seed: int) -> list[Ev]:
    """Per customer a walk through the purchase steps with detours, 1-8 min apart."""
    rnd = random.Random(seed)
    clock = {f"cust{i:06d}": BASE + rnd.randint(0, 120 * MIN) for i in range(n_customers)}
    step = dict.fromkeys(clock, -1)
    chan = {c: rnd.choice(CHANNELS) for c in clock}
    names = list(clock)
    out: list[Ev] = []
    for i in range(n_events):
        c = rnd.choice(names)
        clock[c] += rnd.randint(1 * MIN, 8 * MIN)
        r = rnd.random()
        if r < 0.15:
            chan[c] = rnd.choice(CHANNELS)
        if step[c] < 0 or step[c] >= len(PURCHASE) - 1:
            step[c] = 0
            ty = PURCHASE[0]
        elif r < 0.55:
            step[c] += 1
            ty = PURCHASE[step[c]]
        elif r < 0.7:
            ty = PURCHASE[rnd.randint(0, step[c])]
        else:
            ty = rnd.choice(OTHER)
        out.append(Ev(f"{i:012d}-{c}", ty, chan[c], clock[c], c))
    return out


def arrival_order(events: list[Ev], lateness: int, dup_rate: float, seed: int) -> list[Ev]:
    rnd = random.Random(seed)
    arrivals = events + [e for e in events if rnd.random() < dup_rate]
    keyed = [(e.occurred_at + rnd.randint(0, lateness - 1), k, e) for k, e in enumerate(arrivals)]
    keyed.sort(key=lambda x: (x[0], x[1]))
    return [e for _, _, e in keyed]


def run(order: list[Ev], engine: JourneyEngine, lateness: int, batch: int,
        use_bytes: bool) -> tuple[float, float, dict[str, bytes | CustomerJourneys], int, int]:
    clock = SourceClock(lateness)
    table: dict[str, bytes | CustomerJourneys] = {}
    upserts = late = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(order), batch):
        groups: dict[str, list[Ev]] = defaultdict(list)
        for e in order[i:i + batch]:
            if clock.observe(e.occurred_at, 0):
                late += 1
            else:
                groups[e.customer].append(e)
        wm = clock.mark
        for cust, evs in groups.items():
            raw = table.get(cust)
            if use_bytes:
                state = CustomerJourneys.from_bytes(raw)  # type: ignore[arg-type]
            else:
                state = raw if isinstance(raw, CustomerJourneys) else CustomerJourneys()
            delta = engine.apply(cust, state, evs, watermark=wm, high_ms=clock.max_seen)
            upserts += len(delta.upserts)
            table[cust] = state.to_bytes() if use_bytes else state
    return time.perf_counter() - t0, time.process_time() - c0, table, upserts, late


def state_size(engine: JourneyEngine, table: dict[str, bytes | CustomerJourneys],
               watermark: int | None) -> tuple[int, int, int]:
    """(total state bytes, open journeys, customers with state); with `watermark`, every
    customer is first advanced to it (the timer path: tails folded, stale closed)."""
    total = opened = holders = 0
    for cust, raw in table.items():
        state = raw if isinstance(raw, CustomerJourneys) else CustomerJourneys.from_bytes(raw)
        if watermark is not None:
            engine.advance(cust, state, watermark=watermark)
        if state.is_idle():
            continue
        holders += 1
        total += len(state.to_bytes())
        opened += sum(1 for _, r in engine.current(cust, state) if r.status == "open")
    return total, opened, holders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--customers", type=int, default=5_000)
    ap.add_argument("--lateness-ms", type=int, default=5 * MIN)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--dup-rate", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-bytes", action="store_true", help="skip the per-batch bytes round trip")
    args = ap.parse_args()

    defs = load_definitions()
    engine = JourneyEngine(defs.journeys, definitions_version=defs.version)
    events = traffic(args.events, args.customers, args.seed)
    order = arrival_order(events, args.lateness_ms, args.dup_rate, args.seed)
    print(f"definitions: {', '.join(defs.names)}; {len(order)} arrivals "
          f"({len(events)} distinct) for {args.customers} customers; lateness "
          f"{args.lateness_ms // 1000}s; batch {args.batch}")
    modes = [False] if args.no_bytes else [False, True]
    table: dict[str, bytes | CustomerJourneys] = {}
    for use_bytes in modes:
        secs, cpu, table, upserts, late = run(order, engine, args.lateness_ms, args.batch,
                                              use_bytes)
        label = "with state bytes round trip" if use_bytes else "in-memory state            "
        # CPU seconds too: wall time is skewed when other processes share the cores
        print(f"  {label}: {len(order) / cpu:>8,.0f} events/CPU-s, {len(order) / secs:>8,.0f}"
              f" events/s wall ({cpu:.1f} CPU-s, {secs:.1f} s; {upserts} upserts, {late} late)")
    max_t = max(e.occurred_at for e in events)
    for title, wm in (("as left by the stream (tails present)", None),
                      ("after the timer settles every tail", max_t)):
        total, opened, holders = state_size(engine, table, wm)
        per = total / opened if opened else 0.0
        print(f"  state {title}: {total:,} bytes for {opened} open journeys "
              f"({holders} customers) = {per:,.0f} bytes/open journey")


if __name__ == "__main__":
    main()
