"""CPU cost and size of the internal topics' wire formats per event: MessagePack (format
3, written now) against JSON (format 2, written before; still read), on the envelopes the
real stages write for generated demo traffic (no Kafka).

The validate stage's by-identity envelopes and the identity stage's by-customer
envelopes are built once; then each format's encode (the whole body) and decode
(`stream.stages.envelopes.decode`, which takes either) is timed over the same bodies.
Process CPU time (getrusage), best of `--repeat`, garbage collector on (as in a worker).

    .venv/bin/python bench/bench_wire.py                  # 100k events, ~30 s
    .venv/bin/python bench/bench_wire.py --events 50000 --repeat 7
"""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.generator import GeneratorConfig, generate_events  # noqa: E402
from journeys.events import EventValidator  # noqa: E402
from stream.stages.envelopes import FORMAT, JSON_FORMAT, decode, encode  # noqa: E402
from stream.stages.identity import IdentityStage  # noqa: E402
from stream.stages.validate import ValidateStage  # noqa: E402

PARTITIONS = 4


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def best(repeat: int, work: Callable[[], object]) -> float:
    out = float("inf")
    for _ in range(repeat):
        c0 = cpu()
        work()
        out = min(out, cpu() - c0)
    return out


def envelopes(events: int, batch: int) -> tuple[list[bytes], list[bytes]]:
    """(by-identity, by-customer) envelopes the stages write for generated traffic."""
    config = GeneratorConfig(seed=3, start_ms=1_772_323_200_000, duration_ms=30 * 86_400_000,
                             visitors_per_hour=20_000.0, max_events=events)
    raws = [orjson.dumps(e) for e in generate_events(config)]
    records = [("raw", i % PARTITIONS, i // PARTITIONS, None, v) for i, v in enumerate(raws)]
    validate = ValidateStage(EventValidator(), ("product_view", "signup_start"), PARTITIONS,
                             allowed_lateness_ms=300_000, idle_after_ms=60_000)
    for p in range(PARTITIONS):
        validate.assign(p, None, PARTITIONS, 0)
    by_identity: list[tuple[int, int, bytes]] = []
    for i in range(0, len(records), batch):
        b = validate.prepare(records[i:i + batch], 1_800_000_000_000, set())
        by_identity.extend((p, len(by_identity), v) for p, v in b.envelopes.messages())
    identity = IdentityStage(PARTITIONS, PARTITIONS)
    table: dict[bytes, bytes] = {}
    by_customer: list[bytes] = []
    for i in range(0, len(by_identity), 8):
        b = identity.prepare(by_identity[i:i + 8], table.get)
        by_customer.extend(v for _p, v in b.envelopes.messages())
        table.update({k: v for k, (_p, v) in b.states.items() if v is not None})
    return [v for _p, _o, v in by_identity], by_customer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2_000, help="validate batch (records)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    hops = dict(zip(("by-identity", "by-customer"), envelopes(args.events, args.batch),
                    strict=True))
    print(f"{args.events:,} generated events, best of {args.repeat}, CPU µs per event "
          "(encode = the whole body, decode = stream.stages.envelopes.decode)")
    print(f"  {'hop':<12} {'format':<17} {'bytes/event':>11} {'encode':>8} {'decode':>8}")
    for hop, values in hops.items():
        bodies: list[dict[str, Any]] = [b for b in map(decode, values) if b is not None]
        n = sum(len(b["e"]) for b in bodies)
        json_bodies = [{**b, "v": JSON_FORMAT} for b in bodies]
        for name, enc, these in (("JSON (format 2)", orjson.dumps, json_bodies),
                                 ("MessagePack (3)", encode, bodies)):
            data = [enc(b) for b in these]
            assert [decode(d) for d in data] == these
            t_enc = best(args.repeat, lambda enc=enc, these=these: [enc(b) for b in these])
            t_dec = best(args.repeat, lambda data=data: [decode(d) for d in data])
            size = sum(map(len, data)) / n
            print(f"  {hop:<12} {name:<17} {size:11.1f} {t_enc * 1e6 / n:8.3f} "
                  f"{t_dec * 1e6 / n:8.3f}")
        assert all(b["v"] == FORMAT for b in bodies)


if __name__ == "__main__":
    main()
