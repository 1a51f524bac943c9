"""Memory of the in-worker structures that stay per open journey with either state store
(docs/reliability.md "Bounded state"): the timer index entry of a customer, a table
value held in a dict (what the memory store keeps and RocksDB does not), and an
alert-window entry of an instance, each measured with tracemalloc over N entries.

    .venv/bin/python bench/bench_state_structures.py [--n 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from journeys.definitions import load_definitions  # noqa: E402
from stream.agents.alert_entry_store import RocksEntryStore  # noqa: E402
from stream.engine.dropoff import StepAlertState  # noqa: E402
from stream.engine.outputs import StepReached  # noqa: E402
from stream.eventtime.timers import WakeIndex  # noqa: E402
from stream.stages.alert_chunks import ChunkedEntries  # noqa: E402
from stream.stages.alerts import AlertStage  # noqa: E402
from stream.stages.envelopes import FORMAT, encode  # noqa: E402

START = 1_772_323_200_000


def per_item(n: int, build: Callable[[], Any]) -> float:
    """Bytes allocated per item by `build` (kept alive while measured)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    n = ap.parse_args().n
    journey = load_definitions().journeys[0]

    def wakes() -> WakeIndex:
        w = WakeIndex()
        for i in range(n):
            w.schedule(f"customer-{i:08d}", START + 86_400_000 + i)
        return w

    def table() -> dict[bytes, bytes]:  # a customer value of the RSS bench's size
        return {f"customer-{i:08d}".encode(): bytes(456) + str(i).encode() for i in range(n)}

    def alert_entries() -> StepAlertState:
        st = StepAlertState.new(journey, 0)
        for i in range(n):
            st.observe(StepReached(journey.name, f"o{i}", 0, START + i * 36, "web"))
        return st

    tmp = tempfile.TemporaryDirectory(prefix="bench-alert-entries-")
    store = RocksEntryStore(Path(tmp.name) / "alert-entries")

    def alert_entries_on_disk() -> StepAlertState:
        """The same with JOURNEYS_STATE_STORE=rocksdb (the Python heap only: RocksDB's
        own buffers are bounded by its options, stream/agents/wake_store.py)."""
        st = StepAlertState.new(journey, 0)
        st.entries = ChunkedEntries(store.open("purchase\x1f0"))
        for i in range(n):
            st.observe(StepReached(journey.name, f"o{i}", 0, START + i * 36, "web"))
        return st

    print(f"{n:,} entries each (tracemalloc; bytes per entry)")
    print(f"  timer index (per customer with a timer): {per_item(n, wakes):,.0f}")
    print(f"  table value in a dict (memory store only): {per_item(n, table):,.0f}")
    print(f"  alert entry (per instance in an unsettled window): {per_item(n, alert_entries):,.0f}")
    print("  alert entry, RocksDB index (JOURNEYS_STATE_STORE=rocksdb): "
          f"{per_item(n, alert_entries_on_disk):,.2f}")
    store.close()
    print(f"alert stage CPU at {n:,} open entries of one step (seconds of process time)")
    for kind in ("dict", "rocksdb"):
        fill, one, reread = alert_batches(n, journey, None if kind == "dict"
                                          else RocksEntryStore(Path(tmp.name) / kind))
        print(f"  {kind}: {n // 5000} batches of 5,000 observations {fill:.2f}, then a "
              f"1-observation batch {one:.3f}, the same after a rebalance (re-read) {reread:.3f}")
    tmp.cleanup()


def alert_batches(n: int, journey: Any, store: RocksEntryStore | None) -> tuple[float, ...]:
    """AlertStage.prepare filling one step with n open entries, then one more batch, then
    one after `forget` (entries refilled from the table)."""
    stage, table = AlertStage([journey], 1, store), {}

    def run(rows: list[list[Any]]) -> float:
        started = time.process_time()
        batch = stage.prepare([(0, encode({"v": FORMAT, "o": rows}))], table.get)
        for k, (_q, v) in batch.states.items():
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
        return time.process_time() - started

    rows = [[journey.name, f"o{i}", 0, START + i * 36, "web"] for i in range(n)]
    fill = sum(run(rows[i:i + 5000]) for i in range(0, n, 5000))
    one = run([[journey.name, "x", 0, START, "web"]])
    stage.forget()
    reread = run([[journey.name, "y", 0, START, "web"]])
    stage.entries.close()
    return fill, one, reread


if __name__ == "__main__":
    main()
