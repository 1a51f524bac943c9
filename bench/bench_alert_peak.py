"""The alert stage's transient memory per batch as a step's open entries grow
(docs/reliability.md "What grows per open journey"): `AlertStage.prepare` with the
RocksDB entry index, batches of 5,000 new observations of one step, tracemalloc's peak
per batch above what was live before it, and the changelog bytes the fill wrote.

    .venv/bin/python bench/bench_alert_peak.py --entries 20000 60000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from journeys.definitions import load_definitions  # noqa: E402
from stream.agents.alert_entry_store import RocksEntryStore  # noqa: E402
from stream.stages.alerts import AlertStage  # noqa: E402
from stream.stages.envelopes import FORMAT, encode  # noqa: E402

START = 1_772_323_200_000
BATCH = 5000


def fill(n: int, traced: bool = True) -> tuple[float, float, float]:
    """(largest per-batch peak, changelog bytes written) in MiB, and the CPU seconds of
    the `prepare` calls."""
    journey = load_definitions().journeys[0]
    with tempfile.TemporaryDirectory() as tmp:
        stage, table = AlertStage([journey], 1, RocksEntryStore(Path(tmp) / "e")), {}
        peak, written, cpu = 0, 0, 0.0
        if traced:
            tracemalloc.start()
        try:
            for i in range(0, n, BATCH):
                rows = [[journey.name, f"{j:024x}", 0, START + j * 36, "web"]
                        for j in range(i, min(i + BATCH, n))]
                body = encode({"v": FORMAT, "o": rows})
                del rows
                if traced:
                    tracemalloc.reset_peak()
                    base = tracemalloc.get_traced_memory()[0]
                began = time.process_time()
                batch = stage.prepare([(0, body)], table.get)
                cpu += time.process_time() - began
                if traced:
                    peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
                for k, (_q, v) in batch.states.items():
                    written += len(v or b"")
                    if v is None:
                        table.pop(k, None)
                    else:
                        table[k] = v
        finally:
            if traced:
                tracemalloc.stop()
            stage.entries.close()
    return peak / 2**20, written / 2**20, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, nargs="+", default=[20_000, 60_000])
    args = ap.parse_args()
    for n in args.entries:
        peak, written, _cpu = fill(n)
        _peak, _written, cpu = fill(n, traced=False)
        print(f"{n:>9,} open entries: largest batch peak {peak:6.1f} MiB, "
              f"changelog written {written:7.1f} MiB, prepare CPU {cpu:6.2f} s = "
              f"{cpu * 1e6 / n:5.1f} µs/observation ({n / cpu:,.0f}/s)")


if __name__ == "__main__":
    main()
