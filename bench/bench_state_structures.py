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
        st.entries = store.open("purchase\x1f0")
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
    tmp.cleanup()


if __name__ == "__main__":
    main()
