"""One customer's open session of N events (the backlog case: a session that grows
for hours): CPU per event of building it in batches of 500 (each batch copies the open
sessions), and of one stored round trip (`CustomerState.loads` + `dumps`), plus stored
bytes per event. `--root DIR` runs another checkout's sessionizer (a before/after pair:
`git -C /work/main archive main | tar -x -C DIR`).

    .venv/bin/python bench/bench_session_state.py --events 200000 [--root DIR]
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path


class _Ev:
    __slots__ = ("channel", "event_id", "occurred_at")

    def __init__(self, i: int) -> None:
        self.event_id = f"{i:08d}-aaaa-bbbb-cccc-{i:012d}"
        self.occurred_at = 1_700_000_000_000 + i * 1000
        self.channel = ("web", "app")[i % 2]


class _Seq:
    __slots__ = ("seq",)

    def __init__(self) -> None:
        self.seq = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    sys.path.insert(0, str(args.root))
    from stream.engine.sessions import Sessionizer

    try:
        from stream.engine.session_state import CustomerState
    except ImportError:  # a --root from before stream/engine/session_state.py
        from stream.engine.sessions import CustomerState

    n = args.events
    evs = [_Ev(i) for i in range(n)]
    sz, state = Sessionizer(30 * 60_000), CustomerState()
    # the row version counter (CustomerJourneys.seq in the stream), for a --root whose
    # sessionizer takes one (since 2026-12-04)
    kw = {"versions": _Seq()} if "versions" in inspect.signature(sz.apply).parameters else {}
    c0 = time.process_time()
    for k in range(0, n, 500):
        sz.apply("c1", state, evs[k:k + 500], watermark=-(2**62), **kw)
    build = time.process_time() - c0
    data = state.dumps()
    reps = 20
    c0 = time.process_time()
    for _ in range(reps):
        CustomerState.loads(data).dumps()
    rt = (time.process_time() - c0) / reps
    print(f"{args.root}: {n:,} events, load average {os.getloadavg()[0]:.2f}; build "
          f"{build / n * 1e6:.1f} us CPU/event; stored {len(data) / n:.1f} B/event; round "
          f"trip {rt * 1e3:.1f} ms CPU ({rt / n * 1e9:.0f} ns/event)")


if __name__ == "__main__":
    main()
