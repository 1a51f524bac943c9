"""Differential check of the journey engine: every output of one checkout, to compare
with another's byte for byte (a speed-up must not change any output).

Drives `--root`'s stream.engine.journeys with a fixed pseudo-random workload and writes
every delta (upserts, retractions, closes, step observations, counters), every state's
bytes, `current`, `reemit`, `wake_at` and the stitching hand-overs (`openings`,
`capped_runs`, `closed_events`, `release`, `absorb`, a re-delivered absorb) to `--out`,
then prints the file's sha256. Workload: small fuzzed definitions (random abandon and
conversion windows, listed or unlisted off-path types, path caps 1..5 and 500), events
in any order with duplicates, values (attribute or `properties.value`) and entry
contexts, idle timer runs, states kept in memory or round-tripped through bytes at
random; then `bench_engine.py`'s traffic (default definitions, path cap 12) in memory
and through bytes, every customer finally advanced past its last event.

    git archive main | tar -x -C /tmp/main-tree
    .venv/bin/python bench/engine_diff.py --root /tmp/main-tree --out /tmp/a.log
    .venv/bin/python bench/engine_diff.py --out /tmp/b.log && cmp /tmp/a.log /tmp/b.log
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent


class Ev:
    """An event as the engine reads it (`JourneyEventLike`), value as attribute or in
    `properties`."""

    __slots__ = ("channel", "context", "event_id", "occurred_at", "properties", "type",
                 "value")

    def __init__(self, eid: str, t: int, channel: str, etype: str, ctx: Any, value: Any,
                 props: Any) -> None:
        self.event_id, self.occurred_at, self.channel, self.type = eid, t, channel, etype
        self.context, self.value, self.properties = ctx, value, props


class Log:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def w(self, *parts: Any) -> None:
        self.out.write(" ".join(map(repr, parts)) + "\n")

    def delta(self, tag: str, d: Any) -> None:
        self.w(tag, d.upserts, d.retractions, d.closed, d.reached, d.applied, d.duplicates,
               d.late)


def fuzz(seed: int, log: Log) -> None:
    from journeys.definitions import JourneyDefinition
    from stream.engine.journeys import CustomerJourneys, JourneyEngine

    rnd = random.Random(seed)
    steps = ("view", "cart", "pay", "done")
    ab, win = rnd.randint(1, 80), rnd.randint(1, 250)
    defs = [JourneyDefinition(name="buy", steps=steps, abandon_after=f"{ab}ms",
                              conversion_window=f"{win}ms",
                              off_path=("help",) if rnd.random() < .5 else None),
            JourneyDefinition(name="short", steps=("cart", "pay"),
                              abandon_after=f"{ab * 2}ms", conversion_window=f"{win}ms")]
    eng = JourneyEngine(defs, definitions_version="v1",
                        path_cap=rnd.choice([1, 2, 3, 5, 500]))
    keys = ["c0", "c1", "d0", "d1"]
    table: dict[str, bytes] = {}
    live: dict[str, Any] = {}

    def load(k: str) -> Any:
        if k in live and rnd.random() < .5:
            return live[k]
        live.pop(k, None)
        return CustomerJourneys.from_bytes(table.get(k))

    def store(k: str, st: Any) -> None:
        table[k] = st.to_bytes()
        log.w("state", k, table[k])
        if rnd.random() < .5:
            live[k] = st
        else:
            live.pop(k, None)

    wm = hi = n = 0
    types = (*steps, "help", "other")
    for step in range(rnd.randint(5, 40)):
        r = rnd.random()
        if r < .6:
            k = rnd.choice(keys)
            evs: list[Ev] = []
            for _ in range(rnd.randint(1, 5)):
                n += 1
                t = max(wm, hi + rnd.randint(-60, 40))
                hi = max(hi, t)
                v = rnd.choice([None, None, 3.5, 7.0, {"value": 2}])
                ctx = rnd.choice([None, {"utm": "x"}])
                props = v if isinstance(v, dict) else None
                evs.append(Ev(f"e{n:03d}", t, rnd.choice("wxy"), rnd.choice(types), ctx,
                              None if props else v, props))
                if rnd.random() < .15:
                    evs.append(evs[rnd.randrange(len(evs))])
            rnd.shuffle(evs)
            wm = max(wm, hi - rnd.randint(0, 70))
            st = load(k)
            if rnd.random() < .9:
                evs = [e for e in evs if e.occurred_at >= st.checkpoint]
            log.delta("apply", eng.apply(k, st, evs, watermark=wm, high_ms=hi))
            store(k, st)
        elif r < .75:
            wm += rnd.randint(0, 50)
            for k in keys:
                st = load(k)
                log.delta("advance", eng.advance(k, st, watermark=wm))
                log.w("wake", eng.wake_at(st))
                store(k, st)
        elif r < .9:
            dev, cust = rnd.choice([("d0", "c0"), ("d1", "c1"), ("d0", "c1"), ("c1", "c0")])
            ds = load(dev)
            log.delta("devsettle", eng.advance(dev, ds, watermark=wm))
            openings, runs, closed = eng.openings(ds), eng.capped_runs(ds), eng.closed_events(ds)
            log.w("handover", openings, runs, closed)
            released, d = eng.release(dev, ds)
            log.w("released", released)
            log.delta("release", d)
            store(dev, ds)
            cs = load(cust)
            source = f"{dev}{step}"
            log.delta("absorb", eng.absorb(cust, cs, source, released, watermark=wm,
                                           linked_at=wm, openings=openings, runs=runs,
                                           closed=closed))
            if rnd.random() < .2:  # a re-delivered hand-over
                log.delta("absorb2", eng.absorb(cust, cs, source, released, watermark=wm))
            store(cust, cs)
        else:
            k = rnd.choice(keys)
            st = load(k)
            log.w("current", [(d.name, run) for d, run in eng.current(k, st)])
            log.w("reemit", eng.reemit(k, st))
            store(k, st)


def traffic(log: Log, root: Path) -> None:
    sys.path.insert(0, str(root / "bench"))
    import bench_engine as b  # the traffic generator (the root's bench/)

    from journeys.definitions import load_definitions
    from stream.engine.journeys import CustomerJourneys, JourneyEngine
    from stream.eventtime.watermarks import SourceClock

    defs = load_definitions()
    eng = JourneyEngine(defs.journeys, definitions_version=defs.version, path_cap=12)
    order = b.arrival_order(b.traffic(20_000, 400, 3), 5 * b.MIN, 0.03, 3)
    for use_bytes in (False, True):
        clock = SourceClock(5 * b.MIN)
        table: dict[str, Any] = {}
        for i in range(0, len(order), 300):
            groups: dict[str, list[Any]] = defaultdict(list)
            for e in order[i:i + 300]:
                if not clock.observe(e.occurred_at, 0):
                    groups[e.customer].append(e)
            for cust, evs in groups.items():
                raw = table.get(cust)
                st = CustomerJourneys.from_bytes(raw) if use_bytes else raw or CustomerJourneys()
                log.delta("b", eng.apply(cust, st, evs, watermark=clock.mark,
                                         high_ms=clock.max_seen))
                table[cust] = st.to_bytes() if use_bytes else st
                if use_bytes:
                    log.w(table[cust])
        for k in sorted(table):
            v = table[k]
            st = CustomerJourneys.from_bytes(v) if isinstance(v, bytes) else v
            log.delta("adv", eng.advance(k, st, watermark=clock.max_seen))
            log.w("bench", k, st.to_bytes(), eng.wake_at(st))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose engine to run")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=300, help="fuzzed scenarios")
    args = ap.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    with args.out.open("w") as out:
        log = Log(out)
        for seed in range(args.seeds):
            log.w("seed", seed)
            fuzz(seed, log)
        traffic(log, args.root.resolve())
    print(hashlib.sha256(args.out.read_bytes()).hexdigest(), args.out)


if __name__ == "__main__":
    main()
